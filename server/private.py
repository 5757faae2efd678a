"""What of a vault file's body is private (SPEC §14): Obsidian `%% comments %%` and `## Private` sections. Pure.

Both are removed when a file is parsed, before its text becomes a record, so nothing downstream (the
prompt, the dynamic variables, the API's view, the derived cache) ever holds them.
"""

from __future__ import annotations

import re

from server.markdown import HEADING

COMMENT = "%%"
PRIVATE_HEADING = "private"


def without_comments(body: str) -> str:
    """The body without Obsidian comments; an unclosed `%%` hides the rest, as Obsidian shows it."""
    if COMMENT not in body:
        return body
    # Pieces at even places lie outside comments; after an odd number of markers, the last piece is
    # at an odd place, inside the unclosed comment, and is dropped with the rest.
    return "".join(body.split(COMMENT)[::2])


def without_private_sections(body: str) -> str:
    """The body without its `## Private` sections: each from its heading to the next heading of level 1 or 2."""
    if PRIVATE_HEADING not in body.lower():
        return body
    out: list[str] = []
    hiding = False
    for line in body.splitlines(keepends=True):
        heading = HEADING.match(line.rstrip("\r\n"))
        if heading and len(heading.group(1)) <= 2:
            hiding = _is_private(heading.group(2))
        if not hiding:
            out.append(line)
    return "".join(out)


def _is_private(title: str) -> bool:
    return re.sub(r"[\s*_`:]+", " ", title).strip().lower() == PRIVATE_HEADING


def public_text(body: str) -> str:
    """The part of a file's body that may reach a caller: comments first, then private sections."""
    return without_private_sections(without_comments(body))
