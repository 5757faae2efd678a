"""The shape of a vault markdown file, shared by parsing and editing: layout, kinds, headings, frontmatter.

Parsing (`server.parse`) and surgical edits (`server.edits`) must agree on where a file's
frontmatter ends and where its sections are, or an edit could land in a place the parser reads
differently. So both find them here, the way Obsidian does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

CALLERS = "callers"
NOTES = "notes"
SOUL = "soul.md"
SOULS = "souls"  # per-agent souls, `souls/<name>.md` (SPEC §12)

NOTE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.md$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LIST_ITEM = re.compile(r"^\s*[-*+]\s+(?:\[[ xX]\]\s+)?(.*)$")
# A frontmatter fence as Obsidian reads it: exactly three dashes at the start of the line, then
# only spaces or tabs, then the line's end (any ending `str.splitlines` knows, since edits split
# lines that way). Not `----`, not an indented `---`, and not YAML's `...` document end.
_FENCE = re.compile(r"---[ \t]*(?:\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029])?")


class Kind(enum.Enum):
    """Which kind of vault file a path names; OTHER is every file the service ignores."""

    CALLER = "caller"
    SOUL = "soul"
    NOTE = "note"
    OTHER = "other"


def kind_of(relpath: str) -> Kind:
    """Which kind of vault file a vault-relative path names, or `Kind.OTHER` for files we ignore."""
    parts = relpath.split("/")
    name = parts[-1]
    if not name.endswith(".md") or any(p.startswith(".") for p in parts):
        return Kind.OTHER
    if relpath == SOUL or (parts[0] == SOULS and len(parts) == 2):
        return Kind.SOUL
    if parts[0] == CALLERS and len(parts) >= 2:
        return Kind.CALLER
    if parts[0] == NOTES and len(parts) == 2 and NOTE_NAME.match(name):
        return Kind.NOTE
    return Kind.OTHER


@dataclass(frozen=True, slots=True)
class Frontmatter:
    """A closed frontmatter block: its YAML is `lines[1:close]`, the body is `lines[close + 1:]`."""

    close: int  # index of the closing fence line (the opening fence is always line 0)


@dataclass(frozen=True, slots=True)
class Unclosed:
    """A file that opens a frontmatter block and never closes it."""


def is_fence(line: str) -> bool:
    """Whether one line (with or without its line ending) is a frontmatter fence, `---`."""
    return line.startswith("---") and _FENCE.fullmatch(line) is not None  # startswith: cheap, most lines


def find_frontmatter(lines: Sequence[str]) -> Frontmatter | Unclosed | None:
    """Where the frontmatter block of a file's lines is: closed, unclosed, or None if there is none.

    As in Obsidian, a block opens only on the file's very first line and closes at the next `---`
    line; a `---` further down the body is a horizontal rule, never a fence.
    """
    if not lines or not is_fence(lines[0]):
        return None
    for i in range(1, len(lines)):
        if is_fence(lines[i]):
            return Frontmatter(i)
    return Unclosed()


def frontmatter_of(text: str) -> tuple[str, str] | Unclosed | None:
    """`find_frontmatter` for a whole text: (YAML block, body), Unclosed, or None if there is none."""
    if not text.startswith("---"):  # the common "no frontmatter" case, without splitting anything
        return None
    # Split only as far as the closing fence: the frontmatter is short, the body may be long.
    size = 512
    while True:
        whole = size >= len(text)
        lines = text[:size].splitlines(keepends=True)
        # Unless the whole text was split, the last line may be cut short: it is not looked at yet.
        found = find_frontmatter(lines if whole else lines[:-1])
        if isinstance(found, Frontmatter):
            start = len(lines[0])
            end = start + sum(len(line) for line in lines[1 : found.close])
            return text[start:end], text[end + len(lines[found.close]) :]
        if whole:
            return found
        size *= 4
