"""What the agent is told, encoded: the personalize answer's bytes, the cache of them, and a caller's view.

Shared by the personalize route, the admin API's preview and the CLI's `show`/`preview` (`preview_bytes`), so that the
command line never imports the web app. `compose` decides what the answer says; this module encodes
it and decides when a composed answer may be reused.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from typing import Any

import msgspec

from server.compose import BUILTINS, compose, defaults
from server.config import Settings
from server.elevenlabs import Personalization
from server.extrabody import extra_body, with_extra_body
from server.index import Index
from server.records import Caller, Scalar, Soul
from server.service import Service

log = logging.getLogger("memory_bridge.http")

_encoder = msgspec.json.Encoder()
# The last resort if even composing the defaults fails: every built-in variable, nothing else.
STATIC_DEFAULT = _encoder.encode(
    Personalization(dynamic_variables={**dict.fromkeys(BUILTINS, ""), "caller_known": False, "call_count": 0})
)


def answer_bytes(
    index: Index,
    settings: Settings,
    caller: Caller | None,
    now: dt.datetime,
    soul: Soul | None = None,
    user_id: str | None = None,
) -> bytes:
    """Exactly what the personalize webhook answers for `caller` (key `user_id`) at `now`, from this index.

    `soul`: the agent's own (SPEC §12); default, soul.md's.
    """
    return _encoder.encode(compose(caller, soul or index.soul, index.notes, now, settings, user_id))


def preview_bytes(index: Index, settings: Settings, caller: Caller | None, key: str | None, now: dt.datetime) -> bytes:
    """What the webhook answers a caller with key `key` (None: withheld) at `now`, with its extra body if on."""
    content = answer_bytes(index, settings, caller, now, user_id=key)
    if settings.custom_llm_extra_body:
        content = with_extra_body(content, extra_body(key, caller is not None))
    return content


def default_bytes(service: Service, now: dt.datetime) -> bytes:
    """The new-caller answer; a last resort with the soul's variables if even that cannot be composed. Never raises."""
    index: Index = service.memory.index
    try:
        return _encoder.encode(defaults(index.soul, index.notes, service.settings, now))
    except Exception:
        log.exception("could not compose the default answer; sending the last-resort one")
    return last_resort(index)


def last_resort(index: Index) -> bytes:
    """Every variable the soul declares (its default if it is a plain value, else empty) and the built-ins.

    The agent's own prompt may use any of them: one missing would fail the call on ElevenLabs' side.
    """
    try:
        declared: dict[str, Scalar] = {
            name: value if isinstance(value, str | int | float) and not name.startswith("system__") else ""
            for name, value in index.soul.variables.items()
            if not name.startswith("system__")
        }
        builtins: dict[str, Scalar] = {**dict.fromkeys(BUILTINS, ""), "caller_known": False, "call_count": 0}
        return _encoder.encode(Personalization(dynamic_variables={**declared, **builtins}))
    except Exception:
        return STATIC_DEFAULT


class AnswerCache:
    """Encoded personalize answers by caller, reused while all of compose()'s inputs are unchanged.

    compose() is pure, and its inputs are immutable records that the index replaces on every edit,
    so an answer stays valid while the caller record, the soul and today's note are the same objects
    and the day is the same. Bounded, least recently used first: an answer (a few kB) is reused only
    until the caller's call is recorded, seconds later, so only recent callers' answers are worth it.
    """

    def __init__(self, size: int = 4_096) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[object, object, object, str, bytes]] = OrderedDict()
        never = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._minute: tuple[dt.datetime, dt.datetime, str] = (never, never, "")

    def _today(self, service: Service, now: dt.datetime) -> str:
        # Converting to the business time zone costs more than the rest of a cache hit; a date can
        # only change on a minute boundary (every zone's offset is whole minutes), so once a minute.
        start, end, today = self._minute
        if not start <= now < end:
            start = now.replace(second=0, microsecond=0)
            today = service.memory.today(now)
            self._minute = (start, start + dt.timedelta(minutes=1), today)
        return today

    def get(
        self,
        service: Service,
        caller: Caller | None,
        now: dt.datetime,
        soul: Soul | None = None,
        scope: str = "",
        user_id: str | None = None,
    ) -> bytes:
        """The answer for `caller` (key `user_id`) at `now`, composed only if an input changed since the last time.

        `soul` is the agent's (default: soul.md's); `scope` keeps tenants' entries apart in a shared cache.
        """
        index = service.memory.index
        soul, today = soul or index.soul, self._today(service, now)
        note = index.notes.get(today)
        # By the caller's key: a new caller's answer differs from another's by its user_id alone.
        key = scope + (user_id or (caller.phone_hash if caller is not None else ""))
        entry = self._entries.get(key)
        if entry is not None and entry[0] is caller and entry[1] is soul and entry[2] is note and entry[3] == today:
            self._entries.move_to_end(key)
            return entry[4]
        content = answer_bytes(index, service.settings, caller, now, soul, user_id)
        self._entries[key] = (caller, soul, note, today, content)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return content


def caller_json(record: Caller, path: str | None) -> dict[str, Any]:
    """A caller's memory as the API and `memory-bridge show` give it: frontmatter, facts, calls, notes."""
    frontmatter: dict[str, Any] = {
        "phone_hash": record.phone_hash,
        "name": record.name,
        "aliases": list(record.aliases),
        "call_count": record.call_count,
        "first_call": record.first_call,
        "last_call": record.last_call,
    }
    for key in ("language", "voice_id", "first_message"):
        if getattr(record, key):
            frontmatter[key] = getattr(record, key)
    frontmatter.update(record.extra)
    return {
        "phone_hash": record.phone_hash,
        "file": path,
        "frontmatter": frontmatter,
        "facts": list(record.facts),
        "calls": [
            {"date": call.date, "summary": call.summary, "conversation_id": call.conversation_id, "time": call.time}
            for call in record.calls
        ],
        "notes": list(record.notes),
    }
