"""The call recorder: after the answer, each call is counted in the caller's file (SPEC §6).

Personalize only notes a call (a dict update); a background task writes `call_count`,
`first_call` and `last_call` in batches, in the worker process when there is one, and commits them
through the write path. Calls from one caller coalesce; while calls keep coming, batches are paced
so that answering comes first. A call whose file cannot be written now is held and tried again;
none is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

import msgspec

from server.callcount import CallsToRecord, Counted, Recorded, count_calls
from server.config import Settings
from server.gitcommit import caller_label
from server.gitstage import Exact
from server.gitstate import OperationInProgress
from server.identity import Identities, Identity
from server.markdown import Kind
from server.records import Caller
from server.vault import Loaded, Vault
from server.worker import Worker, WorkerError, WorkerGone
from server.writes import WritePath

log = logging.getLogger("memory_bridge.memory")

# Callers recorded per commit, at most one batch per interval while calls keep coming (and back to
# back once they stop).
RECORD_BATCH = 50
RECORD_INTERVAL = 3.2
# A call whose file was just moved or removed by hand, or refused by the disk, is tried again after this long.
_RETRY_SECONDS = 1.0

_jobs_encoder = msgspec.msgpack.Encoder()
_results_decoder = msgspec.msgpack.Decoder(list[Recorded])

# Calls waiting, by caller key: who called, and how many times.
Waiting = dict[str, tuple[Identity, int]]


class Turns:
    """Turns at recording a batch, shared by every vault a process serves (SPEC §12): one at a time, spaced.

    A hundred tenants, each recording a batch every few seconds, would write and commit thirty
    times a second between calls, and every batch costs the event loop time whatever its size.
    Taking turns, with `gap` seconds between the end of one batch and the start of the next,
    bounds that work for the whole process; a tenant's callers wait their turn, none is dropped.
    """

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self._lock = asyncio.Lock()
        self._next = 0.0

    @contextlib.asynccontextmanager
    async def turn(self, spaced: bool = True) -> AsyncIterator[None]:
        """Wait for this recorder's turn, and hold it while its batch is written and committed.

        `spaced` False (no call came since its last batch: the calls stopped) skips the gap, so the
        calls left after a busy spell are all recorded soon after it.
        """
        async with self._lock:
            loop = asyncio.get_running_loop()
            if spaced and (wait := self._next - loop.time()) > 0:
                await asyncio.sleep(wait)
            try:
                yield
            finally:
                self._next = loop.time() + self.gap


class CallRecorder:
    """Counts answered calls in the callers' files, in the background."""

    def __init__(
        self, settings: Settings, vault_: Vault, writes: WritePath, identities: Identities, today: Callable[[], str]
    ) -> None:
        self.settings = settings
        self.vault = vault_
        self.writes = writes
        self.identities = identities
        self._today = today
        self._pending: Waiting = {}
        self._calls_waiting = asyncio.Event()
        # Calls that could not be recorded just now (file moved, disk refused), to be tried again.
        self._held: Waiting = {}
        self._recording = 0  # calls in the batch being written and committed now
        self._noted = 0  # calls noted since start, to tell whether calls keep coming
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The worker process that rewrites files for recorded calls (the server's); None: in process.
        self._worker: Worker | None = None
        self._turns = Turns(0.0)  # a vault of its own waits for no other

    def note_call(self, who: Identity, call_sid: str | None = None) -> None:
        """Queue a call to be recorded (call_count, first_call, last_call).

        Costs a dict update on the call path; the file write and commit happen in the background.
        """
        if who.key is None or who.caller_id.e164 is None:
            return
        self.identities.remember_call_sid(call_sid, who.key)
        self._noted += 1
        pending = self._pending.get(who.key)
        self._pending[who.key] = (who, (pending[1] if pending else 0) + 1)
        self._calls_waiting.set()

    def drop(self, keys: Iterable[str]) -> None:
        """Forget the calls waiting for these callers (they were forgotten: nothing may re-create them)."""
        for key in keys:
            self._pending.pop(key, None)
            self._held.pop(key, None)

    @property
    def pending_calls(self) -> int:
        """Calls answered and not yet recorded (queued, being written, or waiting to be tried again)."""
        waiting = itertools.chain(self._pending.values(), self._held.values())
        return self._recording + sum(calls for _, calls in waiting)

    async def record_calls(self, limit: int | None = None) -> int:
        """Record queued calls now (up to `limit` callers, in one commit); returns how many callers."""
        if limit is None or len(self._pending) <= limit:
            batch, self._pending = self._pending, {}
        else:
            keys = list(itertools.islice(self._pending, limit))
            batch = {key: self._pending.pop(key) for key in keys}
        calls = sum(count for _, count in batch.values())
        self._recording += calls
        try:
            await self._record(batch)
        finally:
            self._recording -= calls
        return len(batch)

    async def _record(self, batch: Waiting) -> None:
        try:
            # While a person's merge, rebase or cherry-pick is in progress the calls wait, without a
            # bound (no client waits for them), and only then is it decided which files they go to.
            await self.writes.git.operations.wait_clear(None)
        except OperationInProgress:
            self._hold(batch)  # the service stops first: kept, and reported as not counted
            raise
        today = self._today()
        jobs = []
        for key, (who, calls) in batch.items():
            if self.identities.blocked(key, recheck=True):
                continue  # blocked since the call was answered (by another process, say): nothing is kept
            relpath, in_file = self.writes.caller_file(key, who.legacy)
            stored = who.caller_id.e164 if self.settings.store_phone_numbers else None
            new = self.writes.index.caller_path(in_file) is None
            jobs.append(CallsToRecord(relpath, key, calls, today, stored, new))
        if not jobs:
            return
        async with (
            self.writes.holding([job.relpath for job in jobs], bounded=False),
            contextlib.AsyncExitStack() as locked,
        ):
            # A file the write path renamed while these waited for it (SPEC §14): counted where it is now.
            jobs = [msgspec.structs.replace(job, relpath=self.writes.names.current(job.relpath)) for job in jobs]
            try:
                # The worker rewrites the files outside the edit lock: looked at again just before.
                await self.writes.git.operations.wait_clear(None)
                async with self.writes.gate.passing():
                    await locked.enter_async_context(self.writes.changing())
                    results = await self._count_calls(jobs)
            except BaseException:
                self._hold(batch)  # nothing says which files were written: keep every call, try again later
                raise
            seqs = [self.vault.next_seq() for _ in results]
            written = []
            disk_said = [r for r in results if r.outcome in (Counted.WRITTEN, Counted.DISK_ERROR)]
            if self._worker is not None and disk_said:
                # The worker process wrote (or failed to write) the files: its disk's word is the latest.
                self.vault.note_disk(next((r.error for r in disk_said if r.outcome is Counted.DISK_ERROR), None))
            for job, result, seq in zip(jobs, results, seqs, strict=True):
                if result.outcome is Counted.DISK_ERROR:
                    # The disk refused the write: the calls wait, and are counted once it takes writes again.
                    log.warning("%s: cannot record the call yet: %s", result.relpath, result.error)
                    self._hold({job.key: batch[job.key]})
                elif result.outcome is Counted.BROKEN:
                    log.warning("%s: cannot record the call: %s", result.relpath, result.error)
                elif result.outcome is Counted.GONE:
                    # Moved or removed by hand just now: counted once the watcher has seen where it went.
                    self._hold({job.key: batch[job.key]})
                elif result.outcome is Counted.WRITTEN:
                    known = self.writes.index.caller(job.key)
                    label = caller_label(known.name if known is not None else None, job.key)
                    line = f"call from {label}" + (f" ({job.calls} calls)" if job.calls > 1 else "")
                    written.append((line, result, seq))
            await self.writes.commit_and_index(
                [result.relpath for _, result, _ in written],
                [line for line, _, _ in written],
                "webhook",
                _ready([(result.relpath, _loaded(result), seq) for _, result, seq in written]),
                {r.relpath: Exact(r.base, r.data) for _, r, _ in written if r.data is not None},
            )

    def _hold(self, calls: Waiting) -> None:
        """Keep calls that could not be recorded now, to be queued again shortly."""
        for key, (who, count) in calls.items():
            held = self._held.get(key)
            self._held[key] = (who, count + (held[1] if held else 0))
        asyncio.get_running_loop().call_later(_RETRY_SECONDS, self._requeue_held)

    def _requeue_held(self) -> None:
        held, self._held = self._held, {}
        for key, (who, calls) in held.items():
            queued = self._pending.get(key)
            self._pending[key] = (who, calls + (queued[1] if queued else 0))
        if held:
            self._calls_waiting.set()

    async def _count_calls(self, jobs: list[CallsToRecord]) -> list[Recorded]:
        """Rewrite the callers' files, in the worker process if there is one, else here."""
        if self._worker is None:
            return [await _yielding(count_calls(self.vault, job)) for job in jobs]
        paths = [job.relpath for job in jobs]
        files = self.writes.index.files
        before = {path: state.digest if (state := files.get(path)) else None for path in paths}
        self.vault.own.claim(paths)
        try:
            try:
                raw = await self._worker.call("record_calls", str(self.vault.root), _jobs_encoder.encode(jobs))
                results = _results_decoder.decode(raw)
            except (WorkerGone, WorkerError) as exc:
                log.warning("recording calls in process: %s", exc)
                results = [await _yielding(self._recount(job, before[job.relpath])) for job in jobs]
            for result in results:
                if result.digest is not None:
                    self.vault.own.note(result.relpath, result.digest, result.stat)
            return results
        finally:
            self.vault.own.release(paths)

    def _recount(self, job: CallsToRecord, before: str | None) -> Recorded:
        # The worker failed or died during the batch: a file it already rewrote is taken as it is now (counting
        # its calls again would count them twice); the others are rewritten here.
        now = self.vault.digest_of(job.relpath)
        if now is None or now == before:
            return count_calls(self.vault, job)
        loaded = self.vault.load(job.relpath)
        if loaded is None or not isinstance(loaded.record, Caller):
            return Recorded(job.relpath, Counted.BROKEN, error=loaded.error if loaded else "the file is gone")
        return Recorded(job.relpath, Counted.WRITTEN, loaded.digest, loaded.stat, loaded.record)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        noted = self._noted
        while not self._stopping.is_set():
            await self._calls_waiting.wait()
            self._calls_waiting.clear()
            started, coming, noted = loop.time(), self._noted != noted, self._noted
            try:
                # Before the turn: a person's rebase in one tenant's vault holds up no other's recording.
                await self.writes.git.operations.wait_clear(None)
                async with self._turns.turn(spaced=coming):
                    await self.record_calls(limit=RECORD_BATCH)
            except OperationInProgress:
                pass  # stopping during a person's git operation: the calls are held, and counted in `stop`
            except Exception:  # a failed batch is logged; the recorder must keep running
                log.exception("could not record calls")
            if self._pending:
                self._calls_waiting.set()
                if self._noted != noted:
                    # Calls keep coming: answering them comes first, so the next batch waits and each
                    # caller is recorded (and their answer composed anew) at most this often.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), RECORD_INTERVAL - (loop.time() - started))

    async def start(self, worker: Worker | None = None, turns: Turns | None = None) -> None:
        """Start recording in the background; with a `worker`, files are rewritten in that process.

        `turns`: shared with the other vaults of the process, whose batches alternate with this one's.
        """
        self._worker = worker
        self._turns = turns or self._turns
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="call-recorder")

    async def stop(self) -> None:
        """Let the recorder finish its batch, then record the calls still queued."""
        self._stopping.set()
        self._calls_waiting.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._requeue_held()
        try:
            await self.record_calls()
        except OperationInProgress as exc:
            log.warning("%d call(s) not counted: %s", self.pending_calls, exc)
            return
        if self._held:
            lost = sum(calls for _, calls in self._held.values())
            log.warning("%d call(s) not counted: their callers' files were moved or removed while stopping", lost)


def _loaded(result: Recorded) -> Loaded:
    return Loaded(result.relpath, Kind.CALLER, result.digest or "", result.stat, record=result.record)


_T = TypeVar("_T")


def _ready(value: _T) -> Callable[[], Awaitable[_T]]:
    async def get() -> _T:
        return value

    return get


async def _yielding(value: _T) -> _T:
    # One file's worth of work between two turns of the event loop: calls come first.
    await asyncio.sleep(0)
    return value
