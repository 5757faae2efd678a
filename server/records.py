"""Typed records the vault files are parsed into, at the boundary, once (SPEC §2).

Everything downstream (index, composing the answer, the API) works with these immutable Structs,
never with raw file text or YAML dicts.
"""

from __future__ import annotations

import re
import sys

import msgspec

# Values a frontmatter key may carry into a dynamic variable (ElevenLabs accepts scalars only).
Scalar = str | int | float | bool
_CONVERSATION_ID = re.compile(r"conv_[A-Za-z0-9_\-]+")


class CallLine(msgspec.Struct, frozen=True, gc=False):
    """One `## Calls` entry: `- 2026-11-20 14:02 · Summary. (conv_...)`.

    The summary and the conversation id are kept as the one string they are in the file and told
    apart when asked for: a string of their own for each call's id would cost about 5 MB per
    100,000 calls more (the index holds every call of every caller).
    """

    date: str  # "" for a line a person wrote in another shape: all of it is then the summary
    text: str  # the summary, then ` (conv_...)` when the line ends with a conversation id
    time: str | None = None

    @classmethod
    def of(cls, date: str, summary: str, conversation_id: str | None = None, time: str | None = None) -> CallLine:
        """The entry of a call on `date` (and `time`), with its summary and conversation id."""
        return cls(date, f"{summary} ({conversation_id})" if conversation_id else summary, time)

    @property
    def summary(self) -> str:
        """What was said of the call, without its conversation id."""
        cut = self._id_at()
        return self.text if cut < 0 else self.text[:cut].rstrip()

    @property
    def conversation_id(self) -> str | None:
        """ElevenLabs' id of the conversation at the end of the line (`conv_...`), if it has one."""
        cut = self._id_at()
        return None if cut < 0 else self.text[cut + 1 : -1]

    def _id_at(self) -> int:
        # Where `(conv_...)` starts at the very end of the text, or -1; only on a line with a date,
        # as the parser reads it.
        text = self.text
        if not self.date or not text.endswith(")"):
            return -1
        cut = text.rfind("(conv_")
        return cut if cut >= 0 and _CONVERSATION_ID.fullmatch(text, cut + 1, len(text) - 1) else -1


class Caller(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A caller file: identity and counters from the frontmatter, memory from the sections."""

    phone_hash: str
    name: str = ""
    aliases: tuple[str, ...] = ()
    call_count: int = 0
    first_call: str = ""
    last_call: str = ""
    language: str | None = None
    voice_id: str | None = None
    first_message: str | None = None
    # Every other scalar frontmatter key; a key named like a soul variable overrides its default.
    extra: dict[str, Scalar] = {}
    facts: tuple[str, ...] = ()
    calls: tuple[CallLine, ...] = ()
    notes: tuple[str, ...] = ()


class Soul(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """`soul.md`: the agent's instructions (body) and its greetings and variable defaults."""

    body: str
    first_message: str = ""
    first_message_returning: str = ""
    variables: dict[str, Scalar] = {}
    agent_ids: tuple[str, ...] = ()  # a per-agent soul's agents (SPEC §12); soul.md speaks for every other


class DailyNote(msgspec.Struct, frozen=True, gc=False):
    """`notes/YYYY-MM-DD.md`: shown to every caller on that date."""

    date: str
    body: str


_NO_EXTRA: dict[str, Scalar] = {}
# Shared one-name alias tuples, by value; as many as there are distinct names, like interned strings.
_ALIASES: dict[tuple[str, ...], tuple[str, ...]] = {}


def share_strings(caller: Caller) -> Caller:
    """Make a new record's dates, times, names and one-name aliases shared copies; returns it.

    Across 100,000 callers most of these strings repeat (a few hundred dates, a day's minutes, the
    same names), and a copy each costs tens of megabytes. Only for a record nothing else holds yet:
    it sets fields of a frozen Struct in place.
    """
    force = msgspec.structs.force_setattr
    if not caller.extra:
        force(caller, "extra", _NO_EXTRA)  # an empty dict each is 64 bytes; records are never mutated
    for field in ("name", "first_call", "last_call"):
        force(caller, field, sys.intern(getattr(caller, field)))
    if caller.aliases:
        # Most callers' aliases are just their name: one tuple for everyone who shares it.
        aliases = tuple(sys.intern(alias) for alias in caller.aliases)
        force(caller, "aliases", _ALIASES.setdefault(aliases, aliases) if len(aliases) == 1 else aliases)
    for call in caller.calls:
        force(call, "date", sys.intern(call.date))
        if call.time is not None:
            force(call, "time", sys.intern(call.time))
    return caller
