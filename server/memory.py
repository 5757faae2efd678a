"""Memory: who a caller is, and every write to their memory (SPEC §3, §6, §7).

Every writer (webhooks, the tool, the REST API, the CLI) comes through here, so each write takes
the same path: validate → vault write → git commit → index update, and is acknowledged only once it
is committed. File edits are serialised in-process; commits are grouped by the git writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import itertools
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import msgspec

from server import edits, parse, phone, text
from server.callcount import CallsToRecord, Recorded, count_calls
from server.config import Settings
from server.forgets import Forgets
from server.gitwriter import Exact, GitWriter
from server.index import Index
from server.markdown import Kind, kind_of
from server.phone import CallerId
from server.records import Caller
from server.seed import Seed, SeedMemory, SeedNote, SeedSession
from server.vault import MAX_WRITE_BYTES, DiskError, Loaded, Vault
from server.worker import Worker, WorkerError, WorkerGone

log = logging.getLogger("memory_bridge.memory")

MAX_FACT_CHARS = text.MAX_FACT_CHARS
MAX_NOTE_CHARS = text.MAX_NOTE_CHARS
# Frontmatter keys a call's data-collection results may never fill: identity, counters, call set-up.
_PROTECTED_KEYS = {
    "phone_hash",
    "phone",
    "call_count",
    "first_call",
    "last_call",
    "first_message",
    "language",
    "voice_id",
    "aliases",
}
_RECENT_CALLS = 10_000
# A conversation id at the very end of a call line, as write_back writes it.
_TRAILING_ID = re.compile(r"\(([A-Za-z0-9_\-]{1,200})\)$")
# Callers recorded per commit by the call recorder, at most one batch per interval while calls keep
# coming (and back to back once they stop); and files between two yields to the event loop.
RECORD_BATCH = 50
RECORD_INTERVAL = 3.2
# A recorded call whose file was just moved or removed by hand is tried again after this long.
_GONE_RETRY_SECONDS = 1.0
_SLICE = 5

# A change to one file: its current text (None if missing) to its new text (None: leave it).
Change = Callable[[str | None], str | None]


class Identity:
    """A caller ID resolved to a vault key. `key` is None for withheld and non-phone callers."""

    __slots__ = ("caller_id", "key", "legacy")

    def __init__(self, caller_id: CallerId, key: str | None, legacy: str | None) -> None:
        self.caller_id = caller_id
        self.key = key
        self.legacy = legacy


def _short_text(value: object) -> bool:
    # What may be a cache key: junk must not fill the cache.
    return isinstance(value, str) and len(value) <= phone.MAX_CHARS


class WriteError(Exception):
    """A write that cannot be done as asked; the message is safe to show to the client."""


class FileFull(WriteError):
    """A write refused because the file would grow past what the service writes (below the loader's limit)."""


class CallWritten(enum.Enum):
    """What `write_back` did with a finished call."""

    SAVED = "saved"
    DUPLICATE = "duplicate"  # this conversation is already recorded: a retried delivery
    FORGOTTEN = "forgotten"  # the caller was forgotten after this call: nothing is written


def _checked(value: str, limit: int, what: str) -> str:
    """`value` as it may enter the vault, or a WriteError saying why it may not."""
    checked = text.check(value, limit)
    if checked.problem is text.Problem.EMPTY:
        raise WriteError(f"the {what} is empty")
    if checked.problem is text.Problem.TOO_LONG:
        raise WriteError(f"the {what} is longer than {limit} characters")
    return checked.text


class Memory:
    """The service's state (settings, vault, index, git writer) and the operations on it."""

    def __init__(self, settings: Settings, vault_: Vault, index: Index, git: GitWriter, key: bytes) -> None:
        self.settings = settings
        self.vault = vault_
        self.index = index
        self.git = git
        self._key = key
        self._edit_lock = asyncio.Lock()
        # call_sid -> caller key seen at personalize time, for post-call events without a number.
        self._calls: OrderedDict[str, str] = OrderedDict()
        # Calls answered but not yet recorded: caller key -> (who, how many calls).
        self._pending_calls: dict[str, tuple[Identity, int]] = {}
        self._calls_waiting = asyncio.Event()
        # Calls whose caller's file was moved or removed as they were recorded, or whose write the
        # disk refused, to be tried again.
        self._moved: dict[str, tuple[Identity, int]] = {}
        self._recording = 0  # calls in the batch being written and committed now
        self._noted = 0  # calls noted since start, to tell whether calls keep coming
        self._stopping = asyncio.Event()
        self._recorder_task: asyncio.Task[None] | None = None
        # Files written but not yet committed, with the future their commit resolves.
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        # The worker process that rewrites files for recorded calls (the server's); None: in process.
        self._worker: Worker | None = None
        # Callers who call again soon skip parsing and hashing. Kept small: a flood of calls comes
        # from a few thousand callers at most, and every entry is memory held for good.
        self._identities = functools.lru_cache(maxsize=4_096)(self._identify)
        self.forgets = Forgets(vault_.root)

    # -- identity (pure lookups; the call path) -----------------------------------------------

    def identify(self, caller_id: object, called_number: object = None) -> Identity:
        """Resolve the other party of a call; outbound calls (our own number as caller) use `called_number`."""
        if _short_text(caller_id) and (called_number is None or _short_text(called_number)):
            return self._identities(caller_id, called_number)
        return self._identify(caller_id, called_number)

    def _identify(self, caller_id: object, called_number: object) -> Identity:
        region = self.settings.default_region or phone.region_of(called_number)
        parsed = phone.classify(caller_id, region)
        if parsed.e164 is not None and parsed.e164 in self.settings.agent_numbers:
            parsed = phone.classify(called_number, region)
        if parsed.e164 is None:
            return Identity(parsed, None, None)
        return Identity(parsed, phone.caller_key(parsed.e164, self._key), phone.legacy_key(parsed.e164))

    def lookup(self, who: Identity) -> Caller | None:
        """The caller's record, also for callers imported with the predecessor's plain hash."""
        if who.key is None:
            return None
        found = self.index.caller(who.key)
        if found is None and who.legacy is not None:
            found = self.index.caller(who.legacy)
        return found

    def resolve(self, caller: str) -> str | None:
        """A `{caller}` path value (phone hash or phone number) to the key of a known caller."""
        text = caller.strip().lower()
        if phone.is_caller_key(text):
            return text if self.index.caller_path(text) else None
        who = self.identify(caller)
        if who.key is None:
            return None
        for key in (who.key, who.legacy):
            if key and self.index.caller_path(key):
                return key
        return None

    def write_target(self, caller: str) -> tuple[str, str | None, str | None] | None:
        """Whose memory a write addressed to `caller` goes to, as (key, e164, legacy key).

        A known caller (by hash or number), or a new caller named by phone number; None for an
        unknown hash and for anything that is not a usable phone number.
        """
        if (key := self.resolve(caller)) is not None:
            return key, None, None
        who = self.identify(caller)
        if who.key is None or phone.is_caller_key(caller.strip().lower()):
            return None
        return who.key, who.caller_id.e164, who.legacy

    def hash_number(self, number: str) -> str | None:
        """The caller key for a number, or None if it is not a usable phone number."""
        return self.identify(number).key

    def remember_call_sid(self, call_sid: str | None, key: str) -> None:
        """Note which caller a call belongs to, for post-call events that carry no number."""
        if not call_sid:
            return
        self._calls[call_sid] = key
        self._calls.move_to_end(call_sid)
        while len(self._calls) > _RECENT_CALLS:
            self._calls.popitem(last=False)

    def key_for_call_sid(self, call_sid: str | None) -> str | None:
        """The caller key noted for a call SID at personalize time."""
        return self._calls.get(call_sid) if call_sid else None

    def today(self, now: dt.datetime | None = None) -> str:
        """Today's date in the business time zone."""
        return (now or dt.datetime.now(dt.UTC)).astimezone(self.settings.tz).date().isoformat()

    # -- the write path ------------------------------------------------------------------------

    async def _write(self, relpath: str, change: Change, line: str, source: str) -> bool:
        """Apply `change` to one file, commit it and update the index. Returns whether anything changed."""
        if kind_of(relpath) is Kind.CALLER:
            change = _intact(change)
        return bool(await self._write_many([(relpath, change)], [line], source))

    async def _write_many(
        self,
        changes: list[tuple[str, Change]],
        lines: list[str],
        source: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """Apply changes to files, then commit them together and update the index.

        Each `change` gets a file's current text (None: it does not exist) and returns the new text,
        or None for "nothing to do". The current bytes are read under the edit lock, at write time,
        so a person's edit is never overwritten. Returns the files that changed.
        """
        async with self._writing([relpath for relpath, _ in changes]):
            written: list[tuple[str, str, str, int]] = []
            exact: dict[str, Exact] = {}
            refused: list[WriteError | DiskError] = []
            async with self._edit_lock:
                for n, (relpath, change) in enumerate(changes, 1):
                    try:
                        # In a thread: reading, parsing and rewriting a file is a long slice of the loop.
                        result = await asyncio.to_thread(
                            self.vault.update_from, relpath, _within_limit(relpath, change)
                        )
                    except (WriteError, DiskError) as exc:
                        refused.append(exc)  # one refused file never holds back the rest of a batch
                        log.warning("%s: %s", relpath, exc)
                        continue
                    if result is not None:
                        written.append((relpath, result.text, result.digest, self.vault.next_seq()))
                        exact[relpath] = Exact(result.base, result.data)
                    if progress is not None:
                        progress(n, len(changes))
                    if len(changes) > 1:
                        await asyncio.sleep(0)  # a big batch must not hold up calls

            async def entries() -> list[tuple[str, Loaded, int]]:
                return [
                    (relpath, await asyncio.to_thread(self.vault.loaded, relpath, text, sha), seq)
                    for relpath, text, sha, seq in written
                ]

            await self._commit_and_index([relpath for relpath, *_ in written], lines, source, entries, exact)
            if refused and len(changes) == 1:
                raise refused[0]
            return [relpath for relpath, *_ in written]

    @contextlib.asynccontextmanager
    async def _writing(self, paths: list[str]) -> AsyncIterator[None]:
        """The write path's hold on `paths`, from before their change until their commit is indexed."""
        for n, relpath in enumerate(paths, 1):
            if relpath in self.git.hand_edits or self._edited_behind_our_back(relpath):
                # A person's edit goes into its own commit first, so it keeps `Source: hand-edit`.
                await self.git.commit_hand_edits({relpath: "edited"})
            if n % _SLICE == 0:
                await asyncio.sleep(0)
        # git commits whole files: a second write to a file whose first write is not committed yet
        # would land in the first one's commit, under its Source. So it waits for that commit.
        while busy := next((f for p in paths if (f := self._in_flight.get(p)) is not None), None):
            await busy
        done = asyncio.get_running_loop().create_future()
        self._in_flight.update(dict.fromkeys(paths, done))
        try:
            yield
        finally:
            for relpath in paths:
                if self._in_flight.get(relpath) is done:
                    del self._in_flight[relpath]
            done.set_result(None)

    async def _commit_and_index(
        self,
        paths: list[str],
        lines: list[str],
        source: str,
        entries: Callable[[], Awaitable[list[tuple[str, Loaded, int]]]],
        exact: dict[str, Exact] | None = None,
    ) -> None:
        """Commit written files, then put what was written (`entries()`, after the commit) in the index.

        Files in `exact` are committed as exactly the change written (see `GitWriter.commit`).
        """
        if not paths:
            return
        try:
            await self.git.commit(paths, lines, source, exact)
        finally:
            for n, (relpath, loaded, seq) in enumerate(await entries(), 1):
                self.index.apply(relpath, loaded, seq)
                if n % _SLICE == 0:
                    await asyncio.sleep(0)

    def _edited_behind_our_back(self, relpath: str) -> bool:
        """Whether the file on disk differs from what the index (and this process) last saw."""
        state = self.index.files.get(relpath)
        if state is not None and state.stat == self.vault.stat(relpath):
            return False  # not touched since it was indexed (a stat costs less than reading the file)
        on_disk = self.vault.digest_of(relpath)
        known = state.digest if state is not None else None
        return on_disk is not None and on_disk != known and not self.vault.own.is_own_write(relpath, on_disk)

    def _caller_file(self, who_key: str, legacy: str | None = None) -> tuple[str, str]:
        """The file of a known caller (and its key in the file), or a new file's path for a new one."""
        for key in (who_key, legacy):
            if key and (relpath := self.index.caller_path(key)):
                return relpath, key
        return self.vault.new_caller_path(who_key), who_key

    def _new_caller(self, key: str, e164: str | None) -> str:
        stored = e164 if self.settings.store_phone_numbers else None
        return edits.new_caller_text(key, phone=stored)

    def _upgrade(self, text: str, key: str, in_file: str) -> str:
        # A caller imported with the predecessor's plain SHA-256 gets the keyed hash on their next call.
        return edits.set_properties(text, {"phone_hash": key}) if in_file != key else text

    def note_call(self, who: Identity, call_sid: str | None = None) -> None:
        """Queue a call to be recorded (call_count, first_call, last_call) by the recorder task.

        Costs a dict update on the call path; the file write and commit happen in the background.
        """
        if who.key is None or who.caller_id.e164 is None:
            return
        self.remember_call_sid(call_sid, who.key)
        self._noted += 1
        pending = self._pending_calls.get(who.key)
        self._pending_calls[who.key] = (who, (pending[1] if pending else 0) + 1)
        self._calls_waiting.set()

    @property
    def pending_calls(self) -> int:
        """Calls answered and not yet recorded (queued, being written, or waiting to be tried again)."""
        waiting = itertools.chain(self._pending_calls.values(), self._moved.values())
        return self._recording + sum(calls for _, calls in waiting)

    async def record_calls(self, limit: int | None = None) -> int:
        """Record queued calls now (up to `limit` callers, in one commit); returns how many callers."""
        if limit is None or len(self._pending_calls) <= limit:
            batch, self._pending_calls = self._pending_calls, {}
        else:
            keys = list(itertools.islice(self._pending_calls, limit))
            batch = {key: self._pending_calls.pop(key) for key in keys}
        calls = sum(count for _, count in batch.values())
        self._recording += calls
        try:
            await self._record(batch)
        finally:
            self._recording -= calls
        return len(batch)

    async def _record(self, batch: dict[str, tuple[Identity, int]]) -> None:
        today = self.today()
        jobs = []
        for key, (who, calls) in batch.items():
            relpath, in_file = self._caller_file(key, who.legacy)
            stored = who.caller_id.e164 if self.settings.store_phone_numbers else None
            jobs.append(CallsToRecord(relpath, key, calls, today, stored, self.index.caller_path(in_file) is None))
        if not jobs:
            return
        async with self._writing([job.relpath for job in jobs]):
            try:
                results = await self._count_calls(jobs)
            except BaseException:
                self._hold(batch)  # nothing says which files were written: keep every call, try again later
                raise
            seqs = [self.vault.next_seq() for _ in results]
            written = []
            if self._worker is not None and any(result.digest is not None or result.disk_error for result in results):
                # The worker process wrote (or failed to write) the files: its disk's word is the latest.
                self.vault.note_disk(next((r.error for r in results if r.disk_error), None))
            for job, result, seq in zip(jobs, results, seqs, strict=True):
                if result.disk_error:
                    # The disk refused the write: the calls wait, and are counted once it takes writes again.
                    log.warning("%s: cannot record the call yet: %s", result.relpath, result.error)
                    self._hold({job.key: batch[job.key]})
                elif result.error is not None:
                    log.warning("%s: cannot record the call: %s", result.relpath, result.error)
                elif result.gone:
                    # Moved or removed by hand just now: counted once the watcher has seen where it went.
                    self._hold({job.key: batch[job.key]})
                elif result.digest is not None:
                    line = f"call from {phone.short(job.key)}" + (f" ({job.calls} calls)" if job.calls > 1 else "")
                    written.append((line, result, seq))
            await self._commit_and_index(
                [result.relpath for _, result, _ in written],
                [line for line, _, _ in written],
                "webhook",
                _ready([(result.relpath, _loaded(result), seq) for _, result, seq in written]),
                {r.relpath: Exact(r.base, r.data) for _, r, _ in written if r.data is not None},
            )

    def _hold(self, calls: dict[str, tuple[Identity, int]]) -> None:
        """Keep calls that could not be recorded now, to be queued again shortly."""
        for key, (who, count) in calls.items():
            held = self._moved.get(key)
            self._moved[key] = (who, count + (held[1] if held else 0))
        asyncio.get_running_loop().call_later(_GONE_RETRY_SECONDS, self._requeue_moved)

    def _requeue_moved(self) -> None:
        moved, self._moved = self._moved, {}
        for key, (who, calls) in moved.items():
            queued = self._pending_calls.get(key)
            self._pending_calls[key] = (who, calls + (queued[1] if queued else 0))
        if moved:
            self._calls_waiting.set()

    async def _count_calls(self, jobs: list[CallsToRecord]) -> list[Recorded]:
        """Rewrite the callers' files, in the worker process if there is one, else here."""
        if self._worker is None:
            return [await _yielding(count_calls(self.vault, job)) for job in jobs]
        paths = [job.relpath for job in jobs]
        before = {path: state.digest if (state := self.index.files.get(path)) else None for path in paths}
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
            return Recorded(job.relpath, error=loaded.error if loaded else "the file is gone")
        return Recorded(job.relpath, loaded.digest, loaded.stat, loaded.record)

    async def _recorder(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            await self._calls_waiting.wait()
            self._calls_waiting.clear()
            started, noted = loop.time(), self._noted
            try:
                await self.record_calls(limit=RECORD_BATCH)
            except Exception:  # a failed batch is logged; the recorder must keep running
                log.exception("could not record calls")
            if self._pending_calls:
                self._calls_waiting.set()
                if self._noted != noted:
                    # Calls keep coming: answering them comes first, so the next batch waits and each
                    # caller is recorded (and their answer composed anew) at most this often.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), RECORD_INTERVAL - (loop.time() - started))

    async def start(self, worker: Worker | None = None) -> None:
        """Start the call recorder; with a `worker`, calls are recorded in that process."""
        self._worker = worker
        self._stopping.clear()
        self._recorder_task = asyncio.create_task(self._recorder(), name="call-recorder")

    async def stop(self) -> None:
        """Let the recorder finish its batch, then record the calls still queued."""
        self._stopping.set()
        self._calls_waiting.set()
        if self._recorder_task is not None:
            await self._recorder_task
            self._recorder_task = None
        self._requeue_moved()
        await self.record_calls()
        if self._moved:
            lost = sum(calls for _, calls in self._moved.values())
            log.warning("%d call(s) not counted: their callers' files were moved or removed while stopping", lost)

    async def add_fact(
        self, key: str, fact: str, source: str, *, e164: str | None = None, legacy: str | None = None
    ) -> str:
        """Append a fact to a caller's `## Facts`, creating the caller if needed; returns the file."""
        item = _checked(fact, MAX_FACT_CHARS, "fact")
        relpath, in_file = self._caller_file(key, legacy)

        def change(current: str | None) -> str:
            base = current if current is not None else self._new_caller(key, e164)
            if current is not None and e164 is not None:
                base = self._upgrade(base, key, in_file)
            return edits.append_to_section(base, "Facts", f"- {item}")

        await self._write(relpath, change, f"fact for {phone.short(key)}", source)
        return relpath

    async def add_note(self, text: str, source: str, *, date: str | None = None, key: str | None = None) -> str:
        """Append to a daily note (`notes/DATE.md`) or, with `key`, to that caller's `## Notes`."""
        body = _checked(text, MAX_NOTE_CHARS, "note")
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
                return None if current is None else edits.append_to_section(current, "Notes", f"- {day}: {body}")

            await self._write(relpath, to_caller, f"note for {phone.short(key)}", source)
            return relpath
        relpath = self.vault.note_path(day)

        def to_day(current: str | None) -> str:
            base = current if current is not None else f"# {day}\n\n"
            if base and not base.endswith("\n"):
                base += "\n"
            return base + f"- {body}\n"

        await self._write(relpath, to_day, f"daily note for {day}", source)
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
    ) -> CallWritten:
        """Record a finished call: a `## Calls` line and empty keys filled. Idempotent per conversation.

        `started` is when the call began (None: not known). A summary too long for the vault is
        trimmed and says so, never refused. A call of a caller forgotten after it began writes nothing.
        """
        relpath, in_file = self._caller_file(key, legacy)
        local = (started or dt.datetime.now(dt.UTC)).astimezone(self.settings.tz)
        summary = text.trim(summary, text.MAX_SUMMARY_CHARS) or "Call without a summary."
        line = f"- {local:%Y-%m-%d %H:%M} · {summary} ({conversation_id})"
        declared = set(self.index.soul.variables)
        began = started.timestamp() if started is not None else None
        outcome = CallWritten.SAVED

        def change(current: str | None) -> str | None:
            nonlocal outcome
            # Checked under the edit lock, which a forget holds while it removes the file.
            if self.forgets.before_forget((key, legacy), began):
                outcome = CallWritten.FORGOTTEN
                return None
            base = current if current is not None else self._new_caller(key, e164)
            if current is not None and conversation_id in recorded_conversations(_parse_or_refuse(current)):
                outcome = CallWritten.DUPLICATE
                return None
            if current is not None and e164 is not None:
                base = self._upgrade(base, key, in_file)
            base = edits.append_to_section(base, "Calls", line)
            meta, _ = parse.split_frontmatter(base)
            props: dict[str, object] = {}
            for name, value in fills.items():
                field = "name" if name == "caller_name" else name
                value = text.clip(value, text.MAX_NAME_CHARS)
                allowed = field == "name" or field in declared or (field in meta and field not in _PROTECTED_KEYS)
                if value and allowed and not meta.get(field):
                    props[field] = value
                    if field == "name" and not meta.get("aliases"):
                        props["aliases"] = [value]
            return edits.set_properties(base, props) if props else base

        if await self._write(relpath, change, f"call summary for {phone.short(key)} ({conversation_id})", "webhook"):
            return CallWritten.SAVED
        return CallWritten.FORGOTTEN if outcome is CallWritten.FORGOTTEN else CallWritten.DUPLICATE

    async def forget(self, key: str, source: str) -> bool:
        """Remove a caller's file, in a commit. Returns False if the caller is unknown.

        The forget is recorded first (outside the vault's history), so that a late post-call event
        for a conversation before it, or a call answered before it, does not bring the caller back.
        """
        relpath = self.index.caller_path(key)
        if relpath is None:
            return False
        async with self._writing([relpath]):
            async with self._edit_lock:
                record = self.index.caller(key)
                keys = {key, record.phone_hash} if record is not None else {key}
                await asyncio.to_thread(self.forgets.add, sorted(keys), dt.datetime.now(dt.UTC).timestamp())
                for forgotten in keys:
                    self._pending_calls.pop(forgotten, None)
                    self._moved.pop(forgotten, None)
                base = self.vault.delete(relpath)
                seq = self.vault.next_seq()
            try:
                exact = {relpath: Exact(base, None)}
                await self.git.commit([relpath], f"forget caller {phone.short(key)}", source, exact)
            finally:
                self.index.apply(relpath, None, seq)
        return True

    # -- the predecessor's data ----------------------------------------------------------------

    async def import_seed(self, seed: Seed, progress: Callable[[int, int], None] | None = None) -> ImportReport:
        """Import the predecessor's callers, facts and notes; running it again adds nothing.

        Callers keep the predecessor's plain SHA-256 hash as their `phone_hash` until their next call
        upgrades it to the keyed hash (SPEC §7).
        """
        report = ImportReport()
        caller_notes: dict[str, list[SeedNote]] = {}
        daily: dict[str, list[str]] = {}
        for note in seed.notes:
            body = text.trim(note.note, MAX_NOTE_CHARS)  # the predecessor's data is kept, trimmed if need be
            if not body:
                continue
            if note.phone_hash:
                caller_notes.setdefault(note.phone_hash.lower(), []).append(note)
            else:
                daily.setdefault(self._date_of(note.timestamp), []).append(body)
        changes: list[tuple[str, Change]] = []
        lines: list[str] = []
        for key in seed.caller_hashes():
            if not phone.is_caller_key(key):
                report.skipped += 1
                continue
            relpath = self.index.caller_path(key) or self.vault.new_caller_path(key)
            session = seed.sessions.get(key) or seed.sessions.get(key.upper()) or SeedSession()
            facts = (seed.memories.get(key) or seed.memories.get(key.upper()) or SeedMemory()).facts
            changes.append((relpath, self._seed_caller(key, session, facts, caller_notes.pop(key, []))))
            lines.append(f"import caller {phone.short(key)}")
            report.callers += 1
        for day, texts in sorted(daily.items()):
            changes.append((self.vault.note_path(day), _seed_daily(day, texts)))
            lines.append(f"import daily note for {day}")
            report.daily_notes += len(texts)
        report.skipped += sum(len(notes) for notes in caller_notes.values())  # notes of unknown callers
        report.changed = len(await self._write_many(changes, lines, "cli", progress))
        return report

    def _date_of(self, timestamp: float | None) -> str:
        when = dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp else dt.datetime.now(dt.UTC)
        return self.today(when)

    def _seed_caller(self, key: str, session: SeedSession, facts: list[str], notes: list[SeedNote]) -> Change:
        name = text.clip(session.caller_name or "", text.MAX_NAME_CHARS)
        first = self._date_of(session.first_seen)
        last = self._date_of(session.last_seen or session.first_seen)
        kept_facts = [text.trim(fact, MAX_FACT_CHARS) for fact in facts]
        note_lines = [f"- {self._date_of(note.timestamp)}: {text.trim(note.note, MAX_NOTE_CHARS)}" for note in notes]

        def change(current: str | None) -> str | None:
            text = current if current is not None else edits.new_caller_text(key, name=name, calls=(first, last))
            try:
                existing = parse.parse_caller(text)
            except parse.VaultFileError:
                return None  # a hand-broken file is never overwritten; it is reported on /health
            props: dict[str, object] = {}
            if name and not existing.name:
                props["name"] = name
                if not existing.aliases:
                    props["aliases"] = [name]
            if session.call_count > existing.call_count:
                props["call_count"] = session.call_count
            if current is None or not existing.first_call or first < existing.first_call:
                props["first_call"] = dt.date.fromisoformat(first)
            if current is None or not existing.last_call or last > existing.last_call:
                props["last_call"] = dt.date.fromisoformat(last)
            if props:
                text = edits.set_properties(text, props)
            known = set(existing.facts)
            for fact in kept_facts:
                if fact and fact not in known:
                    text = edits.append_to_section(text, "Facts", f"- {fact}")
                    known.add(fact)
            for line in note_lines:
                if line not in text:
                    text = edits.append_to_section(text, "Notes", line)
            return text

        return change


_jobs_encoder = msgspec.msgpack.Encoder()
_results_decoder = msgspec.msgpack.Decoder(list[Recorded])


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


def _within_limit(relpath: str, change: Change) -> Change:
    """Refuse a change that would make a file bigger than the service writes (room below the loader's limit)."""

    def bounded(current: str | None) -> str | None:
        updated = change(current)
        if updated is not None and not text.fits(updated, MAX_WRITE_BYTES):
            what = "the caller's file" if kind_of(relpath) is Kind.CALLER else f"the file {relpath}"
            raise FileFull(f"{what} is full ({MAX_WRITE_BYTES:,} bytes); move older entries out of it first")
        return updated

    return bounded


def _intact(change: Change) -> Change:
    """Refuse to touch a caller file that does not parse: it is reported on /health and left to a person."""

    def guarded(current: str | None) -> str | None:
        if current is not None:
            _parse_or_refuse(current)
        return change(current)

    return guarded


def _parse_or_refuse(text: str) -> Caller:
    try:
        return parse.parse_caller(text)
    except parse.VaultFileError as exc:
        raise WriteError(f"the caller's file {exc}; fix it first") from None


def _seed_daily(day: str, texts: list[str]) -> Change:
    def change(current: str | None) -> str:
        text = current if current is not None else f"# {day}\n\n"
        for line in (f"- {t}" for t in texts):
            if line not in text.splitlines():
                text = text + ("" if text.endswith("\n") else "\n") + line + "\n"
        return text

    return change


class ImportReport:
    """What `import_seed` did."""

    def __init__(self) -> None:
        self.callers = 0
        self.daily_notes = 0
        self.skipped = 0
        self.changed = 0
