"""The periodic job that keeps call lines no longer than `RETAIN_CALLS_DAYS` (SPEC §14), through the write path.

Once soon after start and then every hour, every caller with a call line older than the cut-off gets
it removed (`server.retention`), in commits of at most a few hundred files with `Source: retention`.
History keeps the old lines, as it keeps every change; `forget --purge` is what erases history.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from server.gitcommit import caller_label
from server.memory import Memory
from server.records import Caller
from server.retention import without_old_calls
from server.writes import Change, WriteError

log = logging.getLogger("memory_bridge.retention")

_FIRST_RUN_SECONDS = 1.0
_EVERY_SECONDS = 3600.0
_FILES_PER_COMMIT = 200


class Retainer:
    """Drops call lines older than a number of days from one vault's callers, now and then."""

    def __init__(self, memory: Memory, days: int) -> None:
        self.memory = memory
        self.days = days
        self._task: asyncio.Task[None] | None = None

    def cutoff(self, now: dt.datetime | None = None) -> str:
        """The first date whose calls are kept (today in the business time zone, less the days)."""
        today = dt.date.fromisoformat(self.memory.today(now))
        return (today - dt.timedelta(days=self.days)).isoformat()

    async def run_once(self, now: dt.datetime | None = None) -> int:
        """Drop old call lines everywhere now; returns how many files changed."""
        cutoff = self.cutoff(now)
        index = self.memory.index
        due = []
        for key in index.caller_keys():
            record = index.caller(key)
            path = index.caller_path(key)
            if isinstance(record, Caller) and path is not None and any(call.date < cutoff for call in record.calls):
                due.append((path, caller_label(record.name, record.phone_hash)))
        changed = 0
        for start in range(0, len(due), _FILES_PER_COMMIT):
            chunk = due[start : start + _FILES_PER_COMMIT]
            changes = [(path, _dropping(cutoff)) for path, _ in chunk]
            lines = [f"calls before {cutoff} dropped for {label}" for _, label in chunk]
            try:
                changed += len(await self.memory.writes.write_many(changes, lines, "retention"))
            except WriteError as exc:
                log.warning("retention: %s", exc)
        if changed:
            log.info("retention: call lines before %s dropped from %d caller file(s)", cutoff, changed)
        return changed

    async def _loop(self) -> None:
        await asyncio.sleep(_FIRST_RUN_SECONDS)
        while True:
            try:
                await self.run_once()
            except Exception:  # a failed run is tried again at the next; the service goes on
                log.exception("retention run failed")
            await asyncio.sleep(_EVERY_SECONDS)

    def start(self) -> None:
        """Start the periodic job."""
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        """Stop the periodic job."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _dropping(cutoff: str) -> Change:
    def change(current: str | None) -> str | None:
        return None if current is None else without_old_calls(current, cutoff)

    return change
