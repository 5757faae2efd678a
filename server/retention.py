"""Which call lines have outlived `RETAIN_CALLS_DAYS`, and a caller file without them, pure (SPEC §14).

A call line is `- YYYY-MM-DD ...` under `## Calls`; one dated before the cut-off date is dropped,
every other byte of the file is kept. No disk, no clock: the date comes in.
"""

from __future__ import annotations

import re

from server.markdown import HEADING, Unclosed, find_frontmatter

_CALL_DATE = re.compile(r"^\s*[-*+]\s+(\d{4}-\d{2}-\d{2})\b")


def without_old_calls(text: str, cutoff: str) -> str | None:
    """`text` without the `## Calls` lines dated before `cutoff` (YYYY-MM-DD); None if none are."""
    lines = text.splitlines(keepends=True)
    found = find_frontmatter(lines)
    start = 0 if found is None else len(lines) if isinstance(found, Unclosed) else found.close + 1
    kept: list[str] = lines[:start]
    in_calls = dropped = False
    for line in lines[start:]:
        match = HEADING.match(line.rstrip("\r\n"))
        if match and len(match.group(1)) <= 2:
            in_calls = len(match.group(1)) == 2 and match.group(2).strip().lower() == "calls"
        elif in_calls and (date := _CALL_DATE.match(line)) is not None and date.group(1) < cutoff:
            dropped = True
            continue
        kept.append(line)
    return "".join(kept) if dropped else None
