"""Applying held post-call events in order, in the background: retried with backoff, parked while a file is broken.

`Postcalls.hold` puts a finished call in the inbox (`server.inbox`) and wakes the applier; the
webhook answers 200 once it returns. The applier writes the events back one after the other in the
order they were held (`Memory.write_back`, committed) and only then removes each from the inbox. A
git or disk failure, or a person's merge in progress, is retried with backoff. An event whose
caller file is broken (or full, or holds conflict markers) is parked with every later event of that
caller, so their order holds, and they are applied once the file is fixed: the watcher re-reads the
fixed file into the index, and the applier looks for that while anything is parked.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import time
from collections import deque

import msgspec

from server import phone
from server.elevenlabs import FinishedCall
from server.gitrun import GitError
from server.gitstate import OperationInProgress
from server.inbox import SLOTS, Held, HeldCall, Inbox
from server.memory import CallWritten, FinishedCallRecord, Memory
from server.vault import DiskError
from server.writes import WriteError

log = logging.getLogger("memory_bridge.postcalls")

RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0
BATCH = 16  # callers applied side by side: more makes longer pauses for the webhooks answered meanwhile
GROUP = 50  # one caller's events written in one change and one commit
PARKED_CHECK_SECONDS = 0.2  # how often a parked caller's file is looked at while anything is parked


class Applied(enum.Enum):
    """What became of one held event when it was applied."""

    SAVED = "saved"
    DUPLICATE = "duplicate"
    FORGOTTEN = "forgotten"
    PARKED = "parked"  # its caller file cannot be written until a person fixes it
    RETRY = "retry"  # git, the disk or a person's git operation: tried again after a pause


class InboxEntry(msgspec.Struct, frozen=True):
    """One held event as `memory-bridge inbox` and /health's details show it: no number, no summary."""

    seq: int
    conversation_id: str
    caller: str  # the caller key's short form
    received: str  # ISO time, UTC
    parked: bool


_WRITTEN = {CallWritten.SAVED: Applied.SAVED, CallWritten.DUPLICATE: Applied.DUPLICATE}


async def apply_one(memory: Memory, call: HeldCall) -> tuple[Applied, str | None]:
    """Write one held call back; its outcome, and why when it is parked or to be retried."""
    return (await apply_calls(memory, [call]))[0]


async def apply_calls(memory: Memory, calls: list[HeldCall]) -> list[tuple[Applied, str | None]]:
    """Write held calls of one caller back, in order, in one commit; each's outcome (and why, if not applied)."""
    first = calls[0]
    records = [
        FinishedCallRecord(
            call.conversation_id,
            call.summary,
            dt.datetime.fromtimestamp(call.started, dt.UTC) if call.started is not None else None,
            call.fills,
            call.facts,
        )
        for call in calls
    ]
    try:
        written = await memory.write_back_calls(first.key, records, e164=first.e164, legacy=first.legacy)
    except (OperationInProgress, GitError, DiskError) as exc:
        return [(Applied.RETRY, " ".join(str(exc).split()) or type(exc).__name__)] * len(calls)
    except WriteError as exc:
        return [(Applied.PARKED, str(exc))] * len(calls)
    return [(_WRITTEN.get(outcome, Applied.FORGOTTEN), None) for outcome in written]


class Postcalls:
    """The inbox of one vault and the task that applies it."""

    def __init__(self, memory: Memory, inbox: Inbox) -> None:
        self.memory = memory
        self.inbox = inbox
        self._queue: deque[Held] = deque(inbox.load())
        self._parked: dict[str, list[Held]] = {}  # caller file -> its events, in order
        self._parked_as: dict[str, str | None] = {}  # caller file -> its indexed version when it was parked
        self._held_ids: set[str] = {held.call.conversation_id for held in self._queue}
        self._wake = asyncio.Event()
        self._waiting: list[tuple[HeldCall, asyncio.Future[Held]]] = []  # to be held in the next batch
        self._holder: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.last_error: str | None = None
        self.applied = 0

    @property
    def held(self) -> int:
        """Events in the inbox, parked ones included."""
        return len(self._queue) + self.parked

    @property
    def parked(self) -> int:
        """Events waiting for a person to fix their caller's file."""
        return sum(len(events) for events in self._parked.values())

    def is_held(self, conversation_id: str) -> bool:
        """Whether an event of this conversation is in the inbox, not yet applied."""
        return conversation_id in self._held_ids

    def entries(self) -> list[InboxEntry]:
        """Every held event, in order, for /health's details."""
        parked = {held.seq for events in self._parked.values() for held in events}
        every = sorted([*self._queue, *(h for events in self._parked.values() for h in events)], key=lambda h: h.seq)
        return [entry(held, held.seq in parked) for held in every]

    async def hold(self, call: HeldCall) -> Held:
        """Hold an event durably and queue it; once this returns, it may be acknowledged.

        Events arriving while a batch is being written are written together next, as one batch and
        one sync (a group commit): under a storm each waits for at most two writes.
        """
        waiting: asyncio.Future[Held] = asyncio.get_running_loop().create_future()
        self._waiting.append((call, waiting))
        if self._holder is None or self._holder.done():
            self._holder = asyncio.create_task(self._hold_waiting(), name="inbox-hold")
        return await waiting

    async def _hold_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:SLOTS], self._waiting[SLOTS:]
            try:
                held = await asyncio.to_thread(self.inbox.hold_many, [call for call, _ in batch])
            except Exception as exc:  # every waiting webhook is told (503 or 500), none left hanging
                for _, waiting in batch:
                    if not waiting.done():
                        waiting.set_exception(exc)
                continue
            self._queue.extend(held)
            self._held_ids.update(h.call.conversation_id for h in held)
            self._wake.set()
            for (_, waiting), one in zip(batch, held, strict=True):
                if not waiting.done():  # its client may have gone: the event is held all the same
                    waiting.set_result(one)

    async def start(self) -> None:
        """Start applying, beginning with what a previous run left held."""
        # Only the server holds events, so only the server may clear what a crash left half-written.
        removed = await asyncio.to_thread(self.inbox.clean_temporaries)
        if removed:
            log.info("removed %d post-call event(s) interrupted before they were held (none was answered)", removed)
        if self._queue:
            log.info("%d post-call event(s) held from before the start: applying them", len(self._queue))
        self._task = asyncio.create_task(self._run(), name="postcalls")

    async def stop(self) -> None:
        """Finish the event being applied and stop; what is left stays held for the next start."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def drain(self) -> list[tuple[InboxEntry, Applied]]:
        """Apply everything held now, parked events included, without the task (the CLI): each and its outcome.

        Stops at the first round with an event to retry (git or the disk failing): it and the rest stay held.
        """
        self._unpark(all_files=True)
        done: list[tuple[InboxEntry, Applied]] = []
        while self._queue:
            results = await self._round()
            done += [(entry(held, outcome is Applied.PARKED), outcome) for held, outcome in results]
            if any(outcome is Applied.RETRY for _, outcome in results):
                break
        return done

    async def _run(self) -> None:
        pause = RETRY_FIRST_SECONDS
        while not self._stopping:
            self._unpark()
            if self._queue:
                results = await self._round()
                if any(outcome is Applied.RETRY for _, outcome in results):
                    await self._sleep(pause)
                    pause = min(pause * 2, RETRY_MAX_SECONDS)
                else:
                    pause = RETRY_FIRST_SECONDS
                continue
            await self._sleep(PARKED_CHECK_SECONDS if self._parked else None)

    async def _sleep(self, seconds: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _choose(self) -> list[tuple[list[Held], str]]:
        """The next events to apply together: for each caller, its first queued ones, in order, up to a batch.

        A caller's events are written in one change and one commit, and callers side by side. Events
        of a parked caller join it, in order.
        """
        chosen: dict[str, list[Held]] = {}
        closed: set[str] = set()  # callers whose group ended (full, or an event for another key)
        for held in list(self._queue):
            relpath, _ = self.memory.writes.caller_file(held.call.key, held.call.legacy)
            if relpath in self._parked:
                self._queue.remove(held)
                self._parked[relpath].append(held)  # behind the caller's earlier events: order holds
                continue
            group = chosen.get(relpath)
            if group is None and len(chosen) < BATCH:
                chosen[relpath] = [held]
            elif group is not None and relpath not in closed:
                same = (group[0].call.key, group[0].call.legacy) == (held.call.key, held.call.legacy)
                if same and len(group) < GROUP:
                    group.append(held)
                else:
                    closed.add(relpath)
        return [(group, relpath) for relpath, group in chosen.items()]

    async def _round(self) -> list[tuple[Held, Applied]]:
        """Apply a batch of events, each caller's together, callers side by side (commits grouped); their outcomes."""
        chosen = self._choose()
        outcomes = await asyncio.gather(*(apply_calls(self.memory, [h.call for h in group]) for group, _ in chosen))
        results = []
        finished: list[Held] = []
        for (group, relpath), group_outcomes in zip(chosen, outcomes, strict=True):
            for held, (outcome, why) in zip(group, group_outcomes, strict=True):
                results.append((held, outcome))
                short = phone.short(held.call.key)
                if outcome is Applied.RETRY:
                    self.last_error = why
                    log.warning("post-call event %s for %s not applied yet, retrying: %s", held.seq, short, why)
                    continue
                self._queue.remove(held)
                if outcome is Applied.PARKED:
                    log.warning("post-call event %s for %s parked until its file is fixed: %s", held.seq, short, why)
                    self._parked.setdefault(relpath, []).append(held)
                    self._parked_as[relpath] = self._indexed(relpath)
                    continue
                finished.append(held)
        if finished:
            await asyncio.to_thread(self.inbox.remove, *finished)
            for held in finished:
                self._held_ids.discard(held.call.conversation_id)
            self.applied += len(finished)
            if not any(outcome is Applied.RETRY for _, outcome in results):
                self.last_error = None
        return results

    def _indexed(self, relpath: str) -> str | None:
        state = self.memory.index.files.get(relpath)
        return None if state is None else state.digest

    def _unpark(self, all_files: bool = False) -> None:
        """Queue again, in order, the events of every parked caller whose file changed since (a fix, perhaps)."""
        if not self._parked:
            return
        # The watcher indexes every change a person makes: a new version may be the fix. If it is
        # not, the first event parks again, with the rest behind it.
        fixed = [relpath for relpath in self._parked if all_files or self._indexed(relpath) != self._parked_as[relpath]]
        if not fixed:
            return
        for relpath in fixed:
            del self._parked_as[relpath]
        events = [held for relpath in fixed for held in self._parked.pop(relpath)]
        self._queue = deque(sorted([*self._queue, *events], key=lambda held: held.seq))
        log.info("%d parked post-call event(s) queued again: their caller file changed", len(events))


def entry(held: Held, parked: bool) -> InboxEntry:
    """One held event as it may be shown."""
    when = dt.datetime.fromtimestamp(held.call.received or time.time(), dt.UTC).isoformat(timespec="seconds")
    return InboxEntry(held.seq, held.call.conversation_id, phone.short(held.call.key), when, parked)


def held_call(memory: Memory, call: FinishedCall, now: float) -> HeldCall | None:
    """A finished call as the inbox holds it, its caller found now (the call SID map is in memory); None: none."""
    identities = memory.identities
    who = identities.identify(call.external_number)
    if who.key is None:
        who = identities.identify(call.initiation_caller_id, call.initiation_called_number)
    key = who.key or identities.key_for_call_sid(call.call_sid)
    if key is None:
        return None
    return HeldCall(
        conversation_id=call.conversation_id,
        key=key,
        legacy=who.legacy,
        e164=who.caller_id.e164 if memory.settings.store_phone_numbers else None,
        summary=call.summary,
        started=call.started.timestamp() if call.started is not None else None,
        fills=call.fills,
        facts=call.new_facts,
        received=now,
    )
