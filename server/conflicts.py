"""Conflict markers git leaves in a file it could not merge, found only where they form a block. Pure.

A file is taken to hold a conflict when it has, in this order, a line opening a block (`<<<<<<<`
alone or followed by a space and a label), later a line that is exactly `=======`, and later a line
closing the block (`>>>>>>>` alone or followed by a space and a label). A diff3 base section
(`|||||||`) may sit between the first two; what lies between the lines does not matter. A line on
its own is never a conflict: `=======` is a Markdown heading underline (setext) as often as not,
and a stray `>>>>>>> x` could be a deeply nested quote. Marker lines start at the line's first
character and have exactly seven characters, git's default marker size.
"""

from __future__ import annotations

import re

_OPEN = re.compile(r"^<{7}(?:[ \t][^\n]*)?\r?$", re.MULTILINE)
_SPLIT = re.compile(r"^={7}\r?$", re.MULTILINE)
_CLOSE = re.compile(r"^>{7}(?:[ \t][^\n]*)?\r?$", re.MULTILINE)


def first_marker(text: str) -> int | None:
    """The line number (from 1) of the line opening the first conflict block in `text`, or None.

    Linear in the text's length: the earliest opening line allows the earliest separator, which
    allows the earliest closing line, so three searches decide whether any block exists.
    """
    if "=======" not in text:  # the common case: no separator line, so no block (a C-speed scan)
        return None
    opening = _OPEN.search(text)
    if opening is None:
        return None
    split = _SPLIT.search(text, opening.end())
    if split is None or _CLOSE.search(text, split.end()) is None:
        return None
    return text.count("\n", 0, opening.start()) + 1


def found_in(data: bytes) -> bool:
    """Whether a file's bytes hold a conflict block (bytes that are not UTF-8 are read as far as they go)."""
    return first_marker(data.decode("utf-8", errors="replace")) is not None
