"""The watcher: keeps the index in step with the vault on disk (SPEC §4).

Hand edits arrive as filesystem events (watchfiles). For each path the watcher re-reads the file
rather than trusting the event type, because editors' save-by-rename produces "added" and "deleted"
for the same path in one batch. Bytes the service wrote itself are recognised by content hash and
skipped. Hand edits are committed with `Source: hand-edit` once a file has been quiet for a while.
A periodic reconcile scan heals anything a missed event left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from pathlib import Path
from typing import Any

import watchfiles

from server import cache, gitmerge
from server.cache import Cached
from server.gitrun import GitError
from server.index import Index
from server.markdown import CALLERS, NOTES, SOULS, Kind, kind_of
from server.vault import Loaded, Vault
from server.writes import WritePath

log = logging.getLogger("memory_bridge.watcher")

# Work in slices so a big batch (a `git pull`, a sync's merge, a bulk copy, the worker's rewrites
# of recorded calls) never holds the event loop for long: a changed caller file costs about 0.3 ms
# to read and parse, more under load, so one file a turn.
_SLICE = 1
# Resolving an event's path to a vault file (and a folder to its files) costs ~30 µs.
_PATHS_SLICE = 16
# The reconcile scan only stats files it has no reason to read (~3 µs each): a larger slice.
_SCAN_SLICE = 10
# How long the watcher waits for the worker to release files it is rewriting before it looks anyway.
_BUSY_PATIENCE_SECONDS = 5.0
# How often a file found missing while the service merges is looked at again, until the merge is done.
_MERGE_POLL_SECONDS = 0.02
_GROUP_SECONDS = 1.0


class Seen(enum.Enum):
    """What `Watcher.refresh` found when it looked at a file again."""

    OWN = "own"  # bytes this process wrote: its write path indexes them once committed
    SAME = "same"  # what the index already has (or still nothing)
    CHANGED = "changed"  # a person's change (or removal), now in the index
    BUSY = "busy"  # the worker process, or the service's merge, is rewriting the file: look again later
    IGNORED = "ignored"  # not a vault file the index keeps


# Editors' temporary and swap files, and dot files, are never vault files.
_NOT_VAULT_FILES = watchfiles.DefaultFilter(ignore_entity_patterns=(r"\.tmp$", r"^\.", r"~$", r"\.sw.$"))


def watch_changes(
    paths: list[Path], recursive: bool, stop: asyncio.Event
) -> AsyncIterator[set[tuple[watchfiles.Change, str]]]:
    """Batches of file changes under `paths` until `stop` (the vault's watcher and the tenants' share it).

    Events are gathered for 400 ms (an editor's save is several), and an empty batch comes every
    second, so a watcher whose loop is stuck shows in its heartbeat.
    """
    return watchfiles.awatch(
        *paths,
        watch_filter=_NOT_VAULT_FILES,
        recursive=recursive,
        step=5,
        debounce=400,
        stop_event=stop,
        rust_timeout=1000,
        yield_on_timeout=True,
    )


class Watcher:
    """Watches one vault and feeds the index; commits hand edits after a quiet period."""

    def __init__(
        self, vault: Vault, index: Index, writes: WritePath, quiet_seconds: float, reconcile_seconds: float
    ) -> None:
        self.vault = vault
        self.index = index
        # Hand edits are committed through the write path: never while a write of ours to the file is uncommitted.
        self.writes = writes
        self.quiet_seconds = quiet_seconds
        self.reconcile_seconds = reconcile_seconds
        self.heartbeat: float | None = None
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._background_tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()

    # -- loading -------------------------------------------------------------------------------

    def refresh(self, relpath: str, *, own_pending: bool = True) -> Seen:
        """Re-read one file into the index, and say what was found.

        With `own_pending`, bytes this process wrote are left to the write path that wrote them,
        which indexes them once they are committed (at start-up there is no such write path).
        """
        if kind_of(relpath) is Kind.OTHER:
            return Seen.IGNORED
        if own_pending and self.vault.own.is_claimed(relpath):
            return Seen.BUSY
        if own_pending and self.vault.own.is_own_file(relpath, self.vault.stat(relpath)):
            return Seen.OWN  # the worker's write for this process, which indexes it: no need to read it
        seq = self.vault.next_seq()
        state = self.index.files.get(relpath)

        def known(sha: str) -> bool:
            # Bytes the index already has, or that this process wrote (its write path indexes them
            # after the commit): no need to parse them again.
            return (state is not None and state.digest == sha) or (
                own_pending and self.vault.own.is_own_write(relpath, sha)
            )

        loaded = self.vault.load(relpath, unless=known)
        if loaded is None:
            if state is None:
                return Seen.SAME
            if own_pending and self.vault.own.is_moved_away(relpath):
                # Renamed by this process's write path, which takes it out of the index when its new
                # path goes in: until then the caller stays known, and no call takes them for new.
                return Seen.OWN
            if own_pending and gitmerge.merging(self.vault.root):
                # git removes a file before it writes the merged version: until the merge is done the
                # caller stays known, and no call in between takes them for new.
                return Seen.BUSY
            self.index.apply(relpath, None, seq)
            return Seen.CHANGED
        if not loaded.parsed:
            if state is not None and state.digest == loaded.digest:
                state.stat = loaded.stat
                return Seen.SAME
            return Seen.OWN
        self.index.apply(relpath, loaded, seq)
        # Someone else's bytes are in service now: if they later put back what this process once
        # wrote, that is their edit, not an echo of ours.
        self.vault.own.forget(relpath)
        if loaded.error:
            log.warning("%s %s; the last good version stays in service", relpath, loaded.error)
        return Seen.CHANGED

    def load_all(self, cached: dict[str, Cached] | None = None) -> int:
        """Parse the whole vault into the index (start-up); returns how many files had to be read.

        A cached parse result is used only when the file's stat signature is unchanged.
        """
        cached = cached or {}
        parsed = 0
        for relpath, stat in self.vault.scan().items():
            loaded = cache.current(cached, relpath, stat)
            if loaded is not None:
                self.index.apply(relpath, loaded, self.vault.next_seq())
            else:
                self.refresh(relpath, own_pending=False)
                parsed += 1
        return parsed

    def snapshot(self) -> list[Loaded]:
        """The index's per-file state, for the derived cache."""
        return [
            Loaded(s.relpath, s.kind, s.digest, s.stat, record=s.record, error=s.error)
            for s in self.index.files.values()
        ]

    # -- running -------------------------------------------------------------------------------

    def watched(self) -> tuple[list[Path], list[Path]]:
        """The folders to watch recursively, and those to watch alone (the vault root, for soul.md).

        The content folders, recursively; never .git: every commit writes dozens of files there, and
        their events would hold back a person's edit.
        """
        root = self.vault.root
        return [root / CALLERS, root / NOTES, root / SOULS], [root]

    async def start(self, own_watch: bool = True) -> None:
        """Start watching and the periodic reconcile scan; returns once the watcher is listening.

        Without `own_watch`, someone else watches the folders and hands their events to `handle`
        (the tenants' one watcher, SPEC §12): only the reconcile scan runs here.
        """
        self._stop.clear()
        recursive, flat = self.watched()
        self._tasks = [asyncio.create_task(self._reconcile_loop(), name="vault-reconcile")]
        if not own_watch:
            self.heartbeat = time.time()
            return
        self._tasks += [
            asyncio.create_task(self._watch(recursive, recursive=True), name="vault-watcher"),
            asyncio.create_task(self._watch(flat, recursive=False), name="soul-watcher"),
        ]
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        """Stop watching and commit every hand edit still waiting for its quiet period."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for handle in self._pending.values():
            handle.cancel()
        if self._pending:
            await self._commit_hand_edits(list(self._pending))
        self._pending.clear()
        if self._background_tasks:
            await asyncio.gather(*self._background_tasks, return_exceptions=True)

    @property
    def alive(self) -> bool:
        """Whether the watch task is running."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def _watch(self, paths: list[Path], recursive: bool) -> None:
        while not self._stop.is_set():
            try:
                for path in paths:
                    path.mkdir(parents=True, exist_ok=True)
                self._ready.set()
                self.heartbeat = time.time()
                async for changes in watch_changes(paths, recursive, self._stop):
                    self.heartbeat = time.time()
                    await self.handle({path for _, path in changes})
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad batch
                log.exception("the vault watcher failed; restarting it")
                await asyncio.sleep(0.5)

    async def handle(self, paths: Iterable[str]) -> None:
        """Bring the index up to date for changed absolute paths, scheduling hand-edit commits."""
        relpaths: set[str] = set()
        for n, path in enumerate(paths):
            relpath = self.vault.relpath(Path(path))
            if relpath is None or relpath.startswith(".git/"):
                continue
            relpaths.add(relpath)
            relpaths.update(self._inside(relpath))
            if n % _PATHS_SLICE == _PATHS_SLICE - 1:
                await asyncio.sleep(0)
        busy = []
        for n, relpath in enumerate(sorted(relpaths)):
            outcome = self.refresh(relpath)
            if outcome is Seen.CHANGED:
                self._schedule_commit(relpath)
            elif outcome is Seen.BUSY:
                busy.append(str(self.vault.root / relpath))
            if n % _SLICE == _SLICE - 1:
                await asyncio.sleep(0)
        if busy:
            # A person may have saved the file while the worker rewrote it: look once it is done.
            self._background(self._look_again(busy))

    async def _look_again(self, paths: list[str]) -> None:
        # Once the worker is done with the files, not by polling: a batch of recorded calls may take a
        # while on a busy machine, and looking at fifty files every few ms would take calls' time.
        relpaths = [relpath for path in paths if (relpath := self.vault.relpath(Path(path))) is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_BUSY_PATIENCE_SECONDS):
                await self.vault.own.released(relpaths)
                while gitmerge.merging(self.vault.root):  # a merge leaves no event to wait on: look
                    await asyncio.sleep(_MERGE_POLL_SECONDS)
        if not self._stop.is_set():  # at stop, the next start's check of uncommitted files has it
            await self.handle(paths)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)

    def _inside(self, relpath: str) -> list[str]:
        """The files an event on a folder stands for, if `relpath` is (or was) a folder.

        A folder moved into the vault, or a file moved into a folder just made, brings files with no
        events of their own; a folder moved away takes its files with it.
        """
        path = self.vault.root / relpath
        if path.is_dir() and not path.is_symlink():
            found = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    rel = Path(dirpath, name).relative_to(self.vault.root).as_posix()
                    if kind_of(rel) is not Kind.OTHER:
                        found.append(rel)
            return found
        if kind_of(relpath) is not Kind.OTHER or path.exists():
            return []
        prefix = relpath + "/"
        return [p for p in self.index.files if p.startswith(prefix)]

    # -- hand-edit commits ---------------------------------------------------------------------

    def _schedule_commit(self, relpath: str) -> None:
        loop = asyncio.get_running_loop()
        if (handle := self._pending.pop(relpath, None)) is not None:
            handle.cancel()
        self.writes.git.hand_edits.add(relpath)
        self._pending[relpath] = loop.call_later(self.quiet_seconds, self._fire, relpath)

    def _fire(self, relpath: str) -> None:
        # Files whose quiet period ends within the next moment go into the same commit: a person
        # saving many files (or a sync tool) makes one commit a second, not one per file.
        soon = asyncio.get_running_loop().time() + _GROUP_SECONDS
        due = [relpath] + [p for p, handle in self._pending.items() if p != relpath and handle.when() <= soon]
        for path in due:
            if (handle := self._pending.pop(path, None)) is not None:
                handle.cancel()
        self._background(self._commit_hand_edits(due))

    def adopt(self, relpaths: list[str]) -> None:
        """Commit these changed files as hand edits after the quiet period (start-up leaves them to the watcher)."""
        for relpath in relpaths:
            self._schedule_commit(relpath)

    async def _commit_hand_edits(self, relpaths: list[str]) -> None:
        # A file with conflict markers stays out of the commit, uncommitted and listed on /health,
        # until a person resolves it: that edit is seen, and committed, like any other.
        conflicted = set(await asyncio.to_thread(lambda: [p for p in relpaths if self.vault.conflicted(p)]))
        if conflicted:
            self.writes.git.hand_edits.difference_update(conflicted)
            log.warning("not committing %s: conflict markers; resolve the merge", ", ".join(sorted(conflicted)))
            relpaths = [path for path in relpaths if path not in conflicted]
            if not relpaths:
                return
        edits = {
            path: "edited" if path in self.index.files or self.vault.stat(path) is not None else "removed"
            for path in relpaths
        }
        try:
            await self.writes.commit_hand_edits(edits)
        except GitError as exc:
            log.error("could not commit the hand edits of %s: %s", ", ".join(relpaths), exc)

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self) -> int:
        """Compare the vault on disk with the index and repair differences; returns files repaired."""
        repaired = 0
        on_disk = set()
        for n, (relpath, stat) in enumerate(self.vault.walk(), 1):
            on_disk.add(relpath)
            state = self.index.files.get(relpath)
            stale = state is None or state.stat != stat
            if stale and self.refresh(relpath) is Seen.CHANGED:
                self._schedule_commit(relpath)
                repaired += 1
            if stale or n % _SCAN_SLICE == 0:
                await asyncio.sleep(0)
        missing = []
        for n, relpath in enumerate(list(self.index.files), 1):
            if relpath not in on_disk:
                missing.append(relpath)
            if n % (_SCAN_SLICE * 50) == 0:  # a look-up each (~0.1 µs): 100,000 files would be 10 ms at once
                await asyncio.sleep(0)
        for relpath in missing:
            if self.refresh(relpath) is Seen.CHANGED:
                self._schedule_commit(relpath)
                repaired += 1
            await asyncio.sleep(0)
        if repaired:
            log.info("reconcile scan repaired %d file(s) a watch event had missed", repaired)
        return repaired

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_seconds)
            try:
                await self.reconcile()
                self.heartbeat = time.time()
            except Exception:
                log.exception("reconcile scan failed")
