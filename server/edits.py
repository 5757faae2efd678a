"""Surgical edits of vault file text: text in, text out, touching only the lines a change is about.

PyYAML cannot round-trip comments, quoting or key order, so nothing here re-serialises a file: a
change rewrites one frontmatter key's own lines or appends one list item, and leaves every other
byte of a hand-written file as it was (SPEC §2). Values are rendered as Obsidian properties.
"""

from __future__ import annotations

import datetime as dt
import re

import yaml

from server.markdown import HEADING, Unclosed, find_frontmatter
from server.parse import VaultFileError
from server.phone import is_caller_key, short
from server.text import one_line


def yaml_scalar(value: object) -> str:
    """Render a value as an Obsidian-friendly YAML scalar, quoted whenever YAML would misread it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value)
    if not text or is_caller_key(text):
        return f'"{text}"'  # an empty string, or a hash YAML could read as a number
    if text.splitlines() != [text]:  # any line break: \n, \r, and also \x85, \u2028 and the like
        text = " ".join(text.split())
    rendered: str = yaml.safe_dump(text, allow_unicode=True, width=1_000_000, default_flow_style=True)
    # A plain scalar is followed by the document-end line "..."; drop that line, not a value's own "...".
    return rendered.removesuffix("\n").removesuffix("\n...").rstrip("\n")


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text[:4096] else "\n"


def _render_entry(key: str, value: object, nl: str) -> list[str]:
    if value is None:
        return [f"{key}:{nl}"]  # YAML's null, as Obsidian writes an empty property
    if isinstance(value, list | tuple):
        if not value:
            return [f"{key}: []{nl}"]
        return [f"{key}:{nl}"] + [f"  - {yaml_scalar(v)}{nl}" for v in value]
    return [f"{key}: {yaml_scalar(value)}{nl}"]


def _entry_span(block: list[str], key: str) -> tuple[int, int] | None:
    """Where a key's own lines are in the frontmatter block's lines: (start, stop), or None if absent."""
    own = re.compile(rf"""^(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*:""")  # bare or quoted key
    start = next((i for i, line in enumerate(block) if own.match(line)), None)
    if start is None:
        return None
    stop = start + 1
    # The entry's own lines: indented continuations and block-list items.
    while stop < len(block) and (block[stop][:1] in {" ", "\t"} or block[stop].startswith("- ")):
        stop += 1
    return start, stop


def set_properties(text: str, changes: dict[str, object]) -> str:
    """Set frontmatter keys, rewriting only each key's own lines; new keys go at the end of the block."""
    nl = _newline(text)
    lines = text.splitlines(keepends=True)
    found = find_frontmatter(lines)
    if found is None:
        head = [f"---{nl}"]
        for key, value in changes.items():
            head += _render_entry(key, value, nl)
        return "".join([*head, f"---{nl}"]) + text
    if isinstance(found, Unclosed):
        raise VaultFileError("the frontmatter has no closing '---' line")
    end = found.close
    block = lines[1:end]
    for key, value in changes.items():
        span = _entry_span(block, key)
        rendered = _render_entry(key, value, nl)
        if span is None:
            if block and not block[-1].endswith(("\n", "\r")):
                block[-1] += nl
            block += rendered
        else:
            block[span[0] : span[1]] = rendered
    return "".join([lines[0], *block, *lines[end:]])


def remove_properties(text: str, keys: list[str]) -> str:
    """Remove frontmatter keys, each with its own lines; every other byte stays. Absent keys are no change."""
    lines = text.splitlines(keepends=True)
    found = find_frontmatter(lines)
    if found is None:
        return text
    if isinstance(found, Unclosed):
        raise VaultFileError("the frontmatter has no closing '---' line")
    block = lines[1 : found.close]
    for key in keys:
        span = _entry_span(block, key)
        if span is not None:
            del block[span[0] : span[1]]
    return "".join([lines[0], *block, *lines[found.close :]])


def append_to_section(text: str, section: str, line: str) -> str:
    """Append `line` to the `## section` (created at the end of the file if missing)."""
    nl = _newline(text)
    lines = text.splitlines(keepends=True)
    found = find_frontmatter(lines)
    # An unclosed block runs to the end of the file, as the parser reads it: no heading lies in it.
    body_start = 0 if found is None else len(lines) if isinstance(found, Unclosed) else found.close + 1
    heading_at = None
    for i in range(body_start, len(lines)):
        match = HEADING.match(lines[i].rstrip("\r\n"))
        if match and len(match.group(1)) == 2 and match.group(2).lower() == section.lower():
            heading_at = i
            break
    if heading_at is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += nl
        gap = [nl] if lines and lines[-1].strip() else []
        return "".join([*lines, *gap, f"## {section}{nl}", f"{line}{nl}"])
    end = len(lines)
    for i in range(heading_at + 1, len(lines)):
        match = HEADING.match(lines[i].rstrip("\r\n"))
        if match and len(match.group(1)) <= 2:
            end = i
            break
    last = heading_at
    for i in range(heading_at + 1, end):
        if lines[i].strip():
            last = i
    if not lines[last].endswith(("\n", "\r")):
        lines[last] += nl
    return "".join([*lines[: last + 1], f"{line}{nl}", *lines[last + 1 :]])


def new_caller_text(
    phone_hash: str, name: str = "", phone: str | None = None, calls: tuple[str, str] | None = None
) -> str:
    """A new caller's file, in the layout of SPEC §2. `calls` is (first_call, last_call), if known."""
    props: dict[str, object] = {"phone_hash": phone_hash, "name": name, "aliases": [name] if name else []}
    if phone:
        props["phone"] = phone
    props["call_count"] = 0
    if calls is not None:
        props.update({"first_call": dt.date.fromisoformat(calls[0]), "last_call": dt.date.fromisoformat(calls[1])})
    head = "".join(line for key, value in props.items() for line in _render_entry(key, value, "\n"))
    title = name or f"Caller {short(phone_hash)}"
    return f"---\n{head}---\n# {one_line(title)}\n\n## Facts\n\n## Calls\n\n## Notes\n"
