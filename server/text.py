"""What text may enter the vault: one line, nothing the loader refuses, bounded (SPEC §2, §7).

Every writer (API, tool, post-call, CLI, import) passes caller-supplied text through here before it
reaches a file. The loader refuses a file with a NUL byte or over its size limit, and reads a list
item back as one line, so text that carried a NUL, a line break of any kind or a megabyte would be
written fine and then lost on the next restart. Pure functions: text in, text (or a refusal) out.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

# Per-item bounds. A fact or note over its bound is refused (the sender can shorten it); a call
# summary or an imported item is trimmed instead (nobody is there to shorten it).
MAX_FACT_CHARS = 500
MAX_NOTE_CHARS = 2_000
MAX_SUMMARY_CHARS = 4_000
MAX_NAME_CHARS = 200
TRIMMED = "… (trimmed)"

# Dropped outright: C0 and C1 controls (NUL included) and DEL, bidi embeddings, overrides,
# isolates and marks (they make text read differently from how it is stored), the byte-order mark,
# lone surrogates (not encodable as UTF-8) and noncharacters (not valid in YAML).
_DROP = re.compile(
    "[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff"
    "\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
    + "".join(f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(1, 17))
    + "]"
)
# Any other break between words (tabs, every kind of line and paragraph separator, other Unicode
# spaces) becomes one space, so a value can never add a line, a heading or a list item to a file.
_SPACES = re.compile(r"\s+")
# Normalising never lengthens text, so a bound of N characters needs at most this many times N of
# the input: a huge body is cut before the regexes run over it.
_LOOKAHEAD = 8


class Problem(enum.Enum):
    """Why a text may not be written as it is."""

    EMPTY = "empty"
    TOO_LONG = "too long"


class Checked(NamedTuple):
    """A text normalised for the vault, and the problem that keeps it out, if any."""

    text: str
    problem: Problem | None = None


def one_line(value: object) -> str:
    """Normalise text for the vault: no control or bidi characters, whitespace collapsed to single spaces."""
    return _SPACES.sub(" ", _DROP.sub("", str(value))).strip()


def check(value: object, limit: int) -> Checked:
    """`value` normalised, refused when empty or longer than `limit` characters."""
    text = one_line(value)  # whole: the writers that refuse take request bodies, which are bounded
    if not text:
        return Checked(text, Problem.EMPTY)
    return Checked(text, Problem.TOO_LONG if len(text) > limit else None)


def trim(value: object, limit: int) -> str:
    """`value` normalised and cut to at most `limit` characters, ending in "… (trimmed)" when it was cut."""
    raw = str(value)
    text = one_line(raw[: limit * _LOOKAHEAD])
    if len(text) <= limit and len(raw) <= limit * _LOOKAHEAD:
        return text
    return text[: max(limit - len(TRIMMED), 0)].rstrip() + TRIMMED


def clip(value: object, limit: int) -> str:
    """`value` normalised and cut to at most `limit` characters, silently (for short values like names)."""
    return one_line(str(value)[: limit * _LOOKAHEAD])[:limit].rstrip()


def fits(text: str, limit_bytes: int) -> bool:
    """Whether `text` encoded as UTF-8 is at most `limit_bytes` bytes (without encoding short texts)."""
    if len(text) * 4 <= limit_bytes:
        return True
    return len(text.encode("utf-8", "surrogatepass")) <= limit_bytes
