"""Vault file bytes to typed records (SPEC §2): callers, the soul, daily notes. Pure: no disk.

A file a person broke is refused with a `VaultFileError` whose message says why, in words fit for
`/health` and the log; the frontmatter's YAML is loaded safely (python-frontmatter's YAML handler,
PyYAML's safe loader), and anchors and aliases are refused before loading.
"""

from __future__ import annotations

import datetime as dt
import re

import yaml
from frontmatter.default_handlers import YAMLHandler

from server.conflicts import first_marker
from server.markdown import HEADING, LIST_ITEM, Kind, Unclosed, frontmatter_of, kind_of
from server.phone import is_caller_key
from server.private import public_text
from server.records import Caller, CallLine, DailyNote, Scalar, Soul

# A file bigger than this is refused rather than parsed: a caller file is a few kilobytes.
MAX_FILE_BYTES = 1_000_000

_BUILTIN_KEYS = {
    "phone_hash",
    "name",
    "aliases",
    "call_count",
    "first_call",
    "last_call",
    "language",
    "voice_id",
    "first_message",
    "phone",
    "tags",
}
_CALL = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[ T](?P<time>\d{2}:\d{2}))?\s*(?:[·:\-–—|]\s*)?(?P<summary>.*?)"
    r"\s*(?:\((?P<conv>conv_[A-Za-z0-9_\-]+)\))?\s*$"
)
# YAML anchors and aliases never appear in Obsidian properties; refusing them defuses alias bombs.
_YAML_ALIAS = re.compile(r"(?:^|[\s\[{,:-])[&*][^\s,\[\]{}]+", re.MULTILINE)

_YAML = YAMLHandler()


class VaultFileError(ValueError):
    """A vault file that cannot be used as it is; the message says why, for `/health` and the log."""


def _resolved(text: str) -> None:
    """Refuse a file in the middle of a merge: serving or committing git's conflict markers is never right."""
    line = first_marker(text)
    if line is not None:
        raise VaultFileError(f"has conflict markers (line {line}): resolve the merge")


def split_frontmatter(text: str) -> tuple[dict[str, object], str]:
    """Split a file into its YAML frontmatter and body. Raises VaultFileError on broken YAML."""
    found = frontmatter_of(text)
    if found is None:
        return {}, text
    if isinstance(found, Unclosed):
        raise VaultFileError("the frontmatter has no closing '---' line")
    block, body = found
    if _YAML_ALIAS.search(block) and _uses_alias(block):
        raise VaultFileError("the frontmatter uses YAML anchors or aliases, which vault files do not allow")
    try:
        meta = _YAML.load(block) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise VaultFileError(f"the frontmatter is not valid YAML{where}: {problem}") from None
    if not isinstance(meta, dict):
        raise VaultFileError("the frontmatter is not a set of key: value properties")
    return {str(k): v for k, v in meta.items()}, body


def _uses_alias(block: str) -> bool:
    # Cheap regex first; confirm with the scanner so a '*' inside a quoted string is not refused.
    try:
        for token in yaml.scan(block, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(token, yaml.AliasToken | yaml.AnchorToken):
                return True
    except yaml.YAMLError:
        return False
    return False


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _scalar(value: object) -> Scalar | None:
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str | dt.date):
        return _text(value)
    return None


def sections(body: str) -> dict[str, list[str]]:
    """The lines under each `##` heading, keyed by the heading's lowercased text."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body.splitlines():
        heading = HEADING.match(line)
        if heading and len(heading.group(1)) <= 2:
            current = found.setdefault(heading.group(2).lower(), []) if len(heading.group(1)) == 2 else None
            continue
        if current is not None:
            current.append(line)
    return found


def _items(lines: list[str]) -> tuple[str, ...]:
    out = []
    for line in lines:
        match = LIST_ITEM.match(line)
        if match and match.group(1).strip():
            out.append(match.group(1).strip())
    return tuple(out)


def parse_call(item: str) -> CallLine:
    """Parse one `## Calls` item; lines a person wrote in another shape keep their text as summary."""
    match = _CALL.match(item)
    if not match:
        return CallLine(date="", text=item)
    return CallLine.of(match.group("date"), match.group("summary"), match.group("conv"), match.group("time"))


def parse_caller(text: str) -> Caller:
    """Parse a caller file. Raises VaultFileError when it has no usable `phone_hash`, or conflict markers."""
    _resolved(text)
    meta, body = split_frontmatter(text)
    key = _text(meta.get("phone_hash")).lower()
    if not key and meta.get("phone") not in (None, ""):
        raise VaultFileError("its phone: is not keyed yet (a usable number becomes its phone_hash when committed)")
    if not key:
        raise VaultFileError("the frontmatter has no phone_hash, so the file belongs to no caller")
    if not is_caller_key(key):
        raise VaultFileError("phone_hash is not 64 hexadecimal digits")
    aliases = meta.get("aliases")
    count = meta.get("call_count")
    extra = {k: v for k, v in ((k, _scalar(v)) for k, v in meta.items() if k not in _BUILTIN_KEYS)}
    parts = sections(public_text(body))
    notes = tuple(line.strip() for line in parts.get("notes", []) if line.strip())
    return Caller(
        phone_hash=key,
        name=_text(meta.get("name")),
        aliases=tuple(_text(a) for a in aliases if _text(a)) if isinstance(aliases, list) else (),
        call_count=count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0,
        first_call=_text(meta.get("first_call")),
        last_call=_text(meta.get("last_call")),
        language=_text(meta.get("language")) or None,
        voice_id=_text(meta.get("voice_id")) or None,
        first_message=_text(meta.get("first_message")) or None,
        extra={k: v for k, v in extra.items() if v is not None},
        facts=_items(parts.get("facts", [])),
        calls=tuple(parse_call(item) for item in _items(parts.get("calls", []))),
        notes=notes,
    )


def parse_soul(text: str) -> Soul:
    """Parse `soul.md`: the body is the prompt; frontmatter holds greetings and variable defaults."""
    _resolved(text)
    meta, body = split_frontmatter(text)
    body = public_text(body)
    variables = {}
    for key, value in meta.items():
        if key in {"first_message", "first_message_returning", "agent_ids"}:
            continue
        scalar = _scalar(value)
        variables[key] = "" if scalar is None else scalar
    return Soul(
        body=body.strip(),
        first_message=_text(meta.get("first_message")),
        first_message_returning=_text(meta.get("first_message_returning")),
        variables=variables,
        agent_ids=_agent_ids(meta.get("agent_ids")),
    )


def _agent_ids(value: object) -> tuple[str, ...]:
    # A per-agent soul (`souls/<name>.md`) names the agents it speaks for (SPEC §12); anything else is none.
    items = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    return tuple(str(item).strip() for item in items if isinstance(item, str | int) and str(item).strip())


def parse_note(date: str, text: str) -> DailyNote:
    """Parse a daily note; its title line (`# 2026-11-25`), if any, is not part of what callers hear."""
    _resolved(text)
    _, body = split_frontmatter(text)
    lines = public_text(body).strip().splitlines()
    if lines and lines[0].lstrip("#").strip() == date and lines[0].startswith("#"):
        lines = lines[1:]
    return DailyNote(date=date, body="\n".join(lines).strip())


def parse(relpath: str, data: bytes) -> Caller | Soul | DailyNote:
    """Parse a vault file of any kind from its bytes."""
    if b"\x00" in data[:8192]:
        raise VaultFileError("the file is binary, not markdown")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise VaultFileError("the file is not UTF-8 text") from None
    kind = kind_of(relpath)
    if kind is Kind.CALLER:
        return parse_caller(text)
    if kind is Kind.SOUL:
        return parse_soul(text)
    if kind is Kind.NOTE:
        return parse_note(relpath.split("/")[-1][:-3], text)
    raise VaultFileError("not a vault file")
