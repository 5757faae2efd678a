"""Backfill: every finished phone conversation ElevenLabs holds whose summary the vault lacks, written back (SPEC §13).

Lists the conversations (`server.conversations`), skips at once those already recorded in a caller's
file or held in the inbox (by exact conversation id, without fetching them), fetches the rest and
writes each back exactly as a post-call event would be (`server.postcalls.apply_one`): running it
twice writes nothing the second time. Conversations of different callers are written together (their
commits grouped); one caller's in the order they happened. Run by `memory-bridge backfill`, and by
the server every `BACKFILL_MINUTES` over the last day.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec

from server.changes import recorded_conversations
from server.conversations import ApiError, ConversationItem, ConversationsApi
from server.elevenlabs import PayloadError, finished_call
from server.inbox import HeldCall
from server.memory import Memory
from server.postcalls import Applied, Postcalls, apply_one, held_call
from server.records import Caller

log = logging.getLogger("memory_bridge.backfill")

SCHEDULED_LOOKBACK_SECONDS = 24 * 3600
BATCH = 100  # conversations fetched together, then written together (commits grouped)
_FINISHED = frozenset({"done", None})  # a conversation still in progress has no summary yet


class BackfillReport(msgspec.Struct, kw_only=True):
    """What one backfill run did, conversation by conversation."""

    listed: int = 0
    already: int = 0  # recorded in the vault or held in the inbox: not fetched
    written: int = 0
    duplicates: int = 0  # fetched, then found recorded (a post-call event arrived meanwhile)
    not_phone: int = 0  # no caller number to write it to (web calls, withheld callers), or not finished
    failed: int = 0  # could not be fetched, or its file is broken: tried again next run


Progress = Callable[[BackfillReport], None]


def _recorded(memory: Memory) -> set[str]:
    ids: set[str] = set()
    for state in list(memory.index.files.values()):
        if isinstance(state.record, Caller):
            ids |= recorded_conversations(state.record)
    return ids


async def backfill(
    memory: Memory,
    api: ConversationsApi,
    postcalls: Postcalls | None,
    *,
    since: float | None = None,
    agent_id: str | None = None,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
) -> BackfillReport:
    """Write back every listed phone conversation not yet in the vault; raises ApiError if the list cannot be read."""
    report = BackfillReport()
    known = _recorded(memory)
    pages = api.pages(since, agent_id)
    todo: list[ConversationItem] = []
    while True:  # the list first (newest first, small items), so each caller's calls are written oldest first
        page = await asyncio.to_thread(next, pages, None)
        if page is None:
            break
        for item in page.conversations or []:
            report.listed += 1
            if item.conversation_id in known or (postcalls is not None and postcalls.is_held(item.conversation_id)):
                report.already += 1
            elif item.status not in _FINISHED:
                report.not_phone += 1
            else:
                known.add(item.conversation_id)
                todo.append(item)
        if progress is not None:
            progress(report)
    todo.sort(key=lambda item: item.start_time_unix_secs or 0)
    for first in range(0, len(todo), BATCH):
        if stop is not None and stop.is_set():
            break
        batch = todo[first : first + BATCH]
        calls = await asyncio.gather(*(_fetch(api, item, memory, report) for item in batch))
        await _write(memory, [call for call in calls if call is not None], report)
        if progress is not None:
            progress(report)
    return report


async def _fetch(
    api: ConversationsApi, item: ConversationItem, memory: Memory, report: BackfillReport
) -> HeldCall | None:
    try:
        data = await asyncio.to_thread(api.details, item.conversation_id)
        call = finished_call(data)
    except (ApiError, PayloadError) as exc:
        log.warning("backfill: conversation %s skipped: %s", item.conversation_id, exc)
        report.failed += 1
        return None
    if data.metadata is None or data.metadata.phone_call is None:
        report.not_phone += 1  # a web or SDK conversation: no caller to remember
        return None
    held = held_call(memory, call, time.time())
    if held is None:
        report.not_phone += 1
    return held


async def _write(memory: Memory, calls: list[HeldCall], report: BackfillReport) -> None:
    by_caller: dict[str, list[HeldCall]] = {}
    for call in calls:
        by_caller.setdefault(call.key, []).append(call)

    async def one_caller(queue: list[HeldCall]) -> None:
        for call in queue:
            outcome, why = await apply_one(memory, call)
            if outcome is Applied.SAVED:
                report.written += 1
            elif outcome in (Applied.DUPLICATE, Applied.FORGOTTEN):
                report.duplicates += 1
            else:
                report.failed += 1
                log.warning("backfill: conversation %s not written: %s", call.conversation_id, why)

    await asyncio.gather(*(one_caller(queue) for queue in by_caller.values()))


class BackfillSchedule:
    """The server's backfill every `BACKFILL_MINUTES`, over the last day; failures are logged and tried next time."""

    def __init__(self, memory: Memory, api: ConversationsApi, postcalls: Postcalls, minutes: float) -> None:
        self.memory, self.api, self.postcalls, self.seconds = memory, api, postcalls, minutes * 60
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.last_report: BackfillReport | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        """Run the first backfill soon after start, then on the schedule."""
        self._task = asyncio.create_task(self._run(), name="backfill")

    async def stop(self) -> None:
        """Stop after the page being written (a write is never cut short)."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                since = time.time() - SCHEDULED_LOOKBACK_SECONDS
                report = await backfill(self.memory, self.api, self.postcalls, since=since, stop=self._stop)
            except ApiError as exc:
                self.last_error = str(exc)
                log.warning("backfill failed, tried again in %g minute(s): %s", self.seconds / 60, exc)
            else:
                self.last_report, self.last_error = report, None
                log.info("backfill: %s", _summary(report))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.seconds)


def _summary(report: BackfillReport) -> str:
    return (
        f"{report.listed} conversation(s) listed, {report.already} already recorded, {report.written} written, "
        f"{report.duplicates} duplicate(s), {report.not_phone} without a caller, {report.failed} failed"
    )


def summary(report: BackfillReport) -> str:
    """A report in one line, for the log and the CLI."""
    return _summary(report)
