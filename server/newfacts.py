"""Facts from every call (SPEC §16): the `new_facts` data-collection value to a few clean, new facts, pure.

ElevenLabs' analysis model answers the `new_facts` item as a string: usually one fact per line,
sometimes as bullets or numbered, sometimes as a JSON-encoded list, sometimes "None". Whatever
arrives, at most `MAX_NEW_FACTS` facts come out, each one line of at most `MAX_NEW_FACT_CHARS`, with
any phone number in it replaced by `[phone]`; a fact already known (the same text after normalising
case, spaces and punctuation) is left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from server import text
from server.logs import redact

DATA_COLLECTION_ID = "new_facts"
MAX_NEW_FACTS = 5  # per call: a summary of the call is already recorded; facts are what lasts
MAX_NEW_FACT_CHARS = 200
# Held per call until it is written: more than are written, since some may turn out to be known already.
MAX_HELD_FACTS = 4 * MAX_NEW_FACTS
# More than this of the raw value is never looked at: 50 facts of 200 characters, with room to spare.
_MAX_RAW_CHARS = 16_000
# A list marker the model may put before a fact: -, *, +, •, "1.", "2)", "[ ]".
_MARKER = re.compile(r"^(?:(?:[-*+•·–—]|\d{1,3}[.)]|\[[ xX]?\])\s+)+")
# The conversation id a fact line ends with, as `with_new_facts` writes it.
TRAILING_CONVERSATION = re.compile(r"\s*\((conv_[A-Za-z0-9_\-]{1,200})\)\s*$")
# What the model writes when a call taught nothing new.
_NOTHING = frozenset({"none", "n/a", "na", "nothing", "no new facts", "no facts", "null", "nil", "-"})
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def fact_key(fact: str) -> str:
    """What two facts are compared by: the text without its conversation id, lowercased, no punctuation."""
    bare = TRAILING_CONVERSATION.sub("", fact)
    return " ".join(_PUNCTUATION.sub(" ", bare.casefold()).split())


def without_conversation(fact: str) -> str:
    """A fact line's text without the conversation id it ends with, if any."""
    return TRAILING_CONVERSATION.sub("", fact)


def conversation_of(fact: str) -> str | None:
    """The conversation id a fact line ends with, if any."""
    found = TRAILING_CONVERSATION.search(fact)
    return found.group(1) if found else None


def _pieces(value: object) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, list | tuple):
        return list(value)
    raw = str(value)[:_MAX_RAW_CHARS].strip()
    if raw.startswith("["):
        try:
            decoded = json.loads(raw)
        except ValueError:  # a truncated or hand-made list: read it as lines
            decoded = None
        if isinstance(decoded, list):
            return decoded
    return list(raw.splitlines())


def _clean(piece: object) -> str:
    if not isinstance(piece, str | int | float) or isinstance(piece, bool):
        return ""
    line = text.one_line(str(piece)[: MAX_NEW_FACT_CHARS * 8])
    line = _MARKER.sub("", line).strip().strip("\"'`").strip()
    line = TRAILING_CONVERSATION.sub("", line)  # a fact names no conversation but its own
    # Nobody chose to write these facts down: a number the caller said (theirs, most likely) must not
    # reach the file and its history (SPEC §7), as the same rule keeps it out of the log.
    line = redact(line)
    if line.casefold().rstrip(".") in _NOTHING:
        return ""
    return text.trim(line, MAX_NEW_FACT_CHARS)


def new_facts(value: object, known: Iterable[str] = (), limit: int = MAX_NEW_FACTS) -> list[str]:
    """The clean facts in a `new_facts` value that are not among `known` facts (nor repeated): at most `limit`."""
    seen = {fact_key(fact) for fact in known}
    found: list[str] = []
    for piece in _pieces(value):
        fact = _clean(piece)
        key = fact_key(fact)
        if not key or key in seen:
            continue
        seen.add(key)
        found.append(fact)
        if len(found) >= limit:
            break
    return found
