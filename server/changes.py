"""What each write does to a file's text: pure functions, text in, text out (SPEC §2, §6).

The write path (`server.writes`) reads a file, hands its text to one of these, and writes what comes
back; none of them touches the disk, the clock or the index, so each is table-tested on its own.
The surgical edits they are built from (one frontmatter key, one appended item) are in `server.edits`.
"""

from __future__ import annotations

import datetime as dt
import re

from server import edits, parse
from server.markdown import frontmatter_of
from server.newfacts import conversation_of
from server.records import Caller

# Frontmatter keys a call's data-collection results may never fill: identity, counters, call set-up.
PROTECTED_KEYS = frozenset(
    {"phone_hash", "phone", "call_count", "first_call", "last_call", "first_message", "language", "voice_id", "aliases"}
)
# A conversation id at the very end of a call line, as `with_call` writes it.
_TRAILING_ID = re.compile(r"\(([A-Za-z0-9_\-]{1,200})\)$")


def with_key(text: str, key: str, key_in_file: str) -> str:
    """A caller imported with the predecessor's plain SHA-256 takes the keyed hash (on their next call)."""
    return edits.set_properties(text, {"phone_hash": key}) if key_in_file != key else text


def with_fact(text: str, fact: str) -> str:
    """The caller's file with `fact` appended to `## Facts`."""
    return edits.append_to_section(text, "Facts", f"- {fact}")


def with_new_facts(text: str, facts: list[str], conversation_id: str) -> str:
    """The caller's file with facts from a call appended to `## Facts`, each ending with its conversation id.

    `facts` are clean and already checked against the file's (`server.newfacts`).
    """
    for fact in facts:
        text = edits.append_to_section(text, "Facts", f"- {fact} ({conversation_id})")
    return text


def fact_conversations(caller: Caller) -> set[str]:
    """The conversation ids that facts of the caller's `## Facts` end with: calls whose facts were written."""
    return {conv for fact in caller.facts if (conv := conversation_of(fact)) is not None}


def keyed(line: str, key: str | None) -> str:
    """A note line marked with its key, in an Obsidian comment: the key never reaches a prompt."""
    return line if key is None else f"{line} %%key: {key}%%"


def replaced_keyed_line(text: str, key: str, line: str) -> str | None:
    """`text` with the line that carries `key`'s mark replaced by `line`; None if no line carries it."""
    mark = f"%%key: {key}%%"
    lines = text.splitlines(keepends=True)
    for i, old in enumerate(lines):
        if old.rstrip("\r\n").rstrip().endswith(mark):
            ending = old[len(old.rstrip("\r\n")) :]
            lines[i] = line + ending
            return "".join(lines)
    return None


def with_caller_note(text: str, day: str, note: str, key: str | None = None) -> str:
    """The caller's file with a dated note appended to `## Notes`; with `key`, replacing that key's line."""
    line = keyed(f"- {day}: {note}", key)
    if key is not None and (replaced := replaced_keyed_line(text, key, line)) is not None:
        return replaced
    return edits.append_to_section(text, "Notes", line)


def with_daily_note(current: str | None, day: str, note: str, key: str | None = None) -> str:
    """A daily note (created with its title if missing) with one more bullet line; with `key`, that key's line."""
    line = keyed(f"- {note}", key)
    base = current if current is not None else f"# {day}\n\n"
    if key is not None and (replaced := replaced_keyed_line(base, key, line)) is not None:
        return replaced
    if base and not base.endswith("\n"):
        base += "\n"
    return base + f"{line}\n"


def call_line(when: dt.datetime, summary: str, conversation_id: str) -> str:
    """A `## Calls` item: local date and time, summary, and the conversation id at the very end."""
    return f"- {when:%Y-%m-%d %H:%M} · {summary} ({conversation_id})"


def recorded_conversations(caller: Caller) -> set[str]:
    """The conversation ids at the end of the caller's `## Calls` lines, where the service writes them.

    Only there: the same id in a fact, a note or inside a summary is text, not a recorded call.
    """
    ids: set[str] = set()
    for call in caller.calls:
        if call.conversation_id:
            ids.add(call.conversation_id)
        elif call.date and (match := _TRAILING_ID.search(call.summary)):
            ids.add(match.group(1))  # an id the parser does not know as ElevenLabs' (no `conv_`)
    return ids


def with_call(text: str, line: str, fills: dict[str, str], declared: set[str]) -> str:
    """The caller's file with a call line, and the empty keys a call's data collection may fill, filled.

    `fills` are already bounded; a result fills `name` (from `caller_name`), a variable the soul
    declares, or another key the file already has, never a protected one, and only when it is empty.
    """
    text = edits.append_to_section(text, "Calls", line)
    meta, _ = parse.split_frontmatter(text)
    props: dict[str, object] = {}
    for name, value in fills.items():
        field = "name" if name == "caller_name" else name
        allowed = field == "name" or field in declared or (field in meta and field not in PROTECTED_KEYS)
        if value and allowed and not meta.get(field):
            props[field] = value
            if field == "name" and not meta.get("aliases"):
                props["aliases"] = [value]
    return edits.set_properties(text, props) if props else text


def merged_seed_caller(
    text: str, existing: Caller, *, name: str, first: str, last: str, calls: int, facts: list[str], notes: list[str]
) -> str:
    """A caller's file with the predecessor's data merged in: missing name, wider dates, new facts and notes.

    `existing` is `text` parsed; `facts` and `notes` are bounded lines. Merging twice adds nothing.
    """
    props: dict[str, object] = {}
    if name and not existing.name:
        props["name"] = name
        if not existing.aliases:
            props["aliases"] = [name]
    if calls > existing.call_count:
        props["call_count"] = calls
    if not existing.first_call or first < existing.first_call:
        props["first_call"] = dt.date.fromisoformat(first)
    if not existing.last_call or last > existing.last_call:
        props["last_call"] = dt.date.fromisoformat(last)
    if props:
        text = edits.set_properties(text, props)
    known = set(existing.facts)
    for fact in facts:
        if fact and fact not in known:
            text = with_fact(text, fact)
            known.add(fact)
    for line in notes:
        if line not in text:
            text = edits.append_to_section(text, "Notes", line)
    return text


def with_daily_lines(current: str | None, day: str, notes: list[str]) -> str:
    """A daily note with each of `notes` as a bullet line, unless that exact line is there already."""
    text = current if current is not None else f"# {day}\n\n"
    for line in (f"- {note}" for note in notes):
        if line not in text.splitlines():
            text = text + ("" if text.endswith("\n") else "\n") + line + "\n"
    return text


# A `phone:` property's own line, as a person types it (YAML would read `0044…` or `4155550123` as a number).
_PHONE_LINE = re.compile(r"^phone[ \t]*:[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def typed_phone(text: str) -> str | None:
    """The `phone:` property of a file's frontmatter as typed (quotes removed); None without one, or empty."""
    found = frontmatter_of(text)
    if found is None:
        return None
    # An unclosed block runs to the end of the file: a number in it is still a number.
    match = _PHONE_LINE.search(found[0] if isinstance(found, tuple) else text)
    if match is None:
        return None
    value = match.group(1)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value.strip() or None


def has_phone_hash(text: str) -> bool:
    """Whether a file's frontmatter sets `phone_hash` at all."""
    found = frontmatter_of(text)
    return isinstance(found, tuple) and re.search(r"^phone_hash[ \t]*:[ \t]*\S", found[0], re.MULTILINE) is not None


def with_phone_keyed(text: str, key: str | None, e164: str | None) -> str:
    """A caller file made by hand from a `phone:` property: `phone_hash` set to `key` (unless None), and
    the number removed, or, with `e164` (STORE_PHONE_NUMBERS), kept only in E.164."""
    if key is not None:
        text = edits.set_properties(text, {"phone_hash": key})
    if e164 is not None:
        return edits.set_properties(text, {"phone": e164})
    return edits.remove_properties(text, ["phone"])


_GENERATED_HEADING = re.compile(r"# Caller [0-9a-f]{12}")


def with_named_heading(text: str, name: str) -> str:
    """A caller file whose generated heading (`# Caller <short key>`) becomes the caller's name; else unchanged."""
    found = frontmatter_of(text)
    head, body = ("", text) if not isinstance(found, tuple) else (text[: len(text) - len(found[1])], found[1])
    lines = body.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip():
            if _GENERATED_HEADING.fullmatch(line.rstrip("\r\n")):
                ending = line[len(line.rstrip("\r\n")) :]
                lines[i] = f"# {' '.join(name.split())}{ending}"
                return head + "".join(lines)
            return text
    return text
