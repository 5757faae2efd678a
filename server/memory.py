"""Memory: the operations on one vault's callers and notes (SPEC §3, §6, §7).

Every writer (webhooks, the tool, the REST API, the CLI) asks here: add a fact or a note, write a
finished call back, forget a caller. Each checks and bounds its text, then takes the write path
(`server.writes`: vault write → git commit → index update) with a pure change from
`server.changes`, and is acknowledged only once committed. Who a caller is lives in
`server.identity`; counting calls in `server.recorder`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import re

import msgspec

from server import edits, newfacts, phone, text
from server.addbyphone import PhoneKeyer
from server.changes import (
    call_line,
    fact_conversations,
    recorded_conversations,
    with_call,
    with_caller_note,
    with_daily_note,
    with_fact,
    with_key,
    with_new_facts,
)
from server.config import Settings
from server.erasures import Erasures
from server.forgets import Forgets
from server.gitcommit import caller_label
from server.gitwriter import GitWriter
from server.identity import Identities
from server.index import Index
from server.ownnumbers import OwnNumbers
from server.recorder import CallRecorder
from server.vault import Vault
from server.writes import WriteError, WritePath, intact, parse_or_refuse

# A note key (`note --key`): short, and safe inside the Obsidian comment that marks its line.
NOTE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")

log = logging.getLogger("memory_bridge.memory")


class CallWritten(enum.Enum):
    """What `write_back` did with a finished call."""

    SAVED = "saved"
    DUPLICATE = "duplicate"  # this conversation is already recorded: a retried delivery
    FORGOTTEN = "forgotten"  # the caller was forgotten after this call: nothing is written


class FinishedCallRecord(msgspec.Struct, frozen=True):
    """A finished call as memory writes it back: its conversation, summary, start, data-collection fills and facts."""

    conversation_id: str
    summary: str
    started: dt.datetime | None
    fills: dict[str, str]
    facts: tuple[str, ...] = ()  # the `new_facts` data collection, clean, not yet checked against the file


def checked(value: str, limit: int, what: str) -> str:
    """`value` as it may enter the vault, or a WriteError saying why it may not."""
    result = text.check(value, limit)
    if result.problem is text.Problem.EMPTY:
        raise WriteError(f"the {what} is empty")
    if result.problem is text.Problem.TOO_LONG:
        raise WriteError(f"the {what} is longer than {limit} characters")
    return result.text


def phone_keyer(vault_: Vault, identities: Identities, store_numbers: bool) -> PhoneKeyer:
    """The keyer of a person's `phone:` properties, with the vault's key and region rules."""

    def keying(number: str) -> tuple[str | None, phone.CallerId]:
        who = identities.identify(number)
        return who.key, who.caller_id

    return PhoneKeyer(vault_, keying, store_numbers)


class Memory:
    """One vault's state (settings, vault, index, git writer) and the operations on it."""

    def __init__(self, settings: Settings, vault_: Vault, index: Index, git: GitWriter, key: bytes) -> None:
        self.settings = settings
        self.vault = vault_
        self.index = index
        self.git = git
        self.erasures = Erasures(vault_.root, key)
        own = OwnNumbers(settings.agent_numbers, vault_.root / ".git")
        self.identities = Identities(settings, index, key, own, self.erasures.blocked)
        self.writes = WritePath(vault_, index, git, settings.git_wait_seconds)
        self.writes.persons.phones = phone_keyer(vault_, self.identities, settings.store_phone_numbers)
        self.recorder = CallRecorder(settings, vault_, self.writes, self.identities, self.today)
        self.forgets = Forgets(vault_.root)

    def today(self, now: dt.datetime | None = None) -> str:
        """Today's date in the business time zone."""
        return (now or dt.datetime.now(dt.UTC)).astimezone(self.settings.tz).date().isoformat()

    def _new_caller(self, key: str, e164: str | None) -> str:
        stored = e164 if self.settings.store_phone_numbers else None
        return edits.new_caller_text(key, phone=stored)

    def label(self, key: str, legacy: str | None = None) -> str:
        """A caller as commit subjects name them: their name when known, and the short key."""
        record = self.index.caller(key) or (self.index.caller(legacy) if legacy else None)
        return caller_label(record.name if record is not None else None, key)

    async def add_fact(
        self,
        key: str,
        fact: str,
        source: str,
        *,
        e164: str | None = None,
        legacy: str | None = None,
        conversation: str | None = None,
    ) -> str:
        """Append a fact to a caller's `## Facts`, creating the caller if needed; returns the file.

        `conversation`: the call it was said in (the tool's), kept in the commit's subject.
        """
        item = checked(fact, text.MAX_FACT_CHARS, "fact")
        if self.erasures.blocked(key, recheck=True):
            raise WriteError("this caller asked not to be remembered")
        relpath, in_file = self.writes.caller_file(key, legacy)

        def change(current: str | None) -> str:
            base = current if current is not None else self._new_caller(key, e164)
            if current is not None and e164 is not None:
                base = with_key(base, key, in_file)
            return with_fact(base, item)

        said = f" in {' '.join(conversation.split())[:80]}" if conversation else ""
        await self.writes.write(relpath, change, f"fact for {self.label(key, legacy)}{said}", source)
        return self.writes.names.current(relpath)

    async def add_note(
        self, note: str, source: str, *, date: str | None = None, key: str | None = None, note_key: str | None = None
    ) -> str:
        """Append to a daily note (`notes/DATE.md`) or, with `key`, to that caller's `## Notes`.

        With `note_key`, the line marked with that key is replaced instead, if there is one: a script
        that runs every day keeps one line up to date rather than adding another.
        """
        body = checked(note, text.MAX_NOTE_CHARS, "note")
        if note_key is not None and not NOTE_KEY.fullmatch(note_key):
            raise WriteError("a note key is 1 to 64 letters, digits, '-', '_' or '.'")
        day = date or self.today()
        try:
            # Python 3.11 also reads "20261125" and "2026-W48-3"; a note file must be named YYYY-MM-DD.
            valid = dt.date.fromisoformat(day).isoformat() == day
        except ValueError:
            valid = False
        if not valid:
            raise WriteError("date must be YYYY-MM-DD")
        if key is not None:
            relpath = self.index.caller_path(key)
            if relpath is None:
                raise WriteError("unknown caller")

            def to_caller(current: str | None) -> str | None:
                return None if current is None else with_caller_note(current, day, body, note_key)

            await self.writes.write(relpath, to_caller, f"note for {self.label(key)}", source)
            return self.writes.names.current(relpath)
        relpath = self.vault.note_path(day)
        await self.writes.write(
            relpath, lambda current: with_daily_note(current, day, body, note_key), f"daily note for {day}", source
        )
        return relpath

    async def write_back(
        self,
        key: str,
        conversation_id: str,
        summary: str,
        started: dt.datetime | None,
        fills: dict[str, str],
        *,
        e164: str | None = None,
        legacy: str | None = None,
        facts: tuple[str, ...] = (),
    ) -> CallWritten:
        """Record a finished call: a `## Calls` line and empty keys filled. Idempotent per conversation.

        `started` is when the call began (None: not known). A summary too long for the vault is
        trimmed and says so, never refused. A call of a caller forgotten after it began writes nothing.
        """
        call = FinishedCallRecord(conversation_id, summary, started, fills, facts)
        return (await self.write_back_calls(key, [call], e164=e164, legacy=legacy))[0]

    async def write_back_calls(
        self, key: str, calls: list[FinishedCallRecord], *, e164: str | None = None, legacy: str | None = None
    ) -> list[CallWritten]:
        """Record several finished calls of one caller in order, in one file change and one commit; each's outcome.

        Each is written as `write_back` writes it; a duplicate among them (or of a recorded call) changes nothing.
        """
        relpath, in_file = self.writes.caller_file(key, legacy)
        now = dt.datetime.now(dt.UTC)
        declared = set(self.index.soul.variables)
        outcomes = [CallWritten.SAVED] * len(calls)
        label = self.label(key, legacy)
        lines: list[str] = []  # the commit lists the calls written, filled in by the change (run before the commit)

        def change(current: str | None) -> str | None:
            lines.clear()
            record = parse_or_refuse(current) if current is not None else None
            recorded = recorded_conversations(record) if record is not None else set()
            # A call whose facts were written once (its id ends a fact line) adds none again, even
            # if a person since deleted some of them, or its call line.
            facts_of = fact_conversations(record) if record is not None else set()
            known = list(record.facts) if record is not None else []
            base, changed = current, False
            for n, call in enumerate(calls):
                began = call.started.timestamp() if call.started is not None else None
                # Checked under the edit lock, which a forget holds while it removes the file.
                if self.forgets.before_forget((key, legacy), began) or self.erasures.before_erasure(
                    (key, legacy), began
                ):
                    outcomes[n] = CallWritten.FORGOTTEN
                    continue
                if call.conversation_id in recorded:
                    outcomes[n] = CallWritten.DUPLICATE
                    continue
                if base is None:
                    base = self._new_caller(key, e164)
                elif not changed and (e164 is not None or legacy is not None):
                    base = with_key(base, key, in_file)
                local = (call.started or now).astimezone(self.settings.tz)
                summary = text.trim(call.summary, text.MAX_SUMMARY_CHARS) or "Call without a summary."
                bounded = {name: text.clip(value, text.MAX_NAME_CHARS) for name, value in call.fills.items()}
                base = with_call(base, call_line(local, summary, call.conversation_id), bounded, declared)
                facts = newfacts.new_facts(call.facts, known) if call.conversation_id not in facts_of else []
                base = with_new_facts(base, facts, call.conversation_id)
                known += facts
                facts_of.add(call.conversation_id)
                recorded.add(call.conversation_id)
                learned = f", {len(facts)} new fact{'s' if len(facts) != 1 else ''}" if facts else ""
                lines.append(f"call summary for {label} ({call.conversation_id}){learned}")
                outcomes[n] = CallWritten.SAVED
                changed = True
            return base if changed else None

        if not await self.writes.write_many([(relpath, intact(change))], lines, "webhook"):
            return [CallWritten.DUPLICATE if o is CallWritten.SAVED else o for o in outcomes]
        return outcomes

    async def forget(self, key: str, source: str) -> bool:
        """Remove a caller's file, in a commit. Returns False if the caller is unknown.

        The forget is recorded first (outside the vault's history), so that a late post-call event
        for a conversation before it, or a call answered before it, does not bring the caller back.
        """
        relpath = self.index.caller_path(key)
        if relpath is None:
            return False

        async def record_the_forget() -> None:
            record = self.index.caller(key)
            keys = sorted({key, record.phone_hash} if record is not None else {key})
            await asyncio.to_thread(self.forgets.add, keys, dt.datetime.now(dt.UTC).timestamp())
            self.recorder.drop(keys)

        await self.writes.delete(relpath, f"forget caller {self.label(key)}", source, record_the_forget)
        log.info("forgot caller %s (source %s)", phone.short(key), source)
        return True
