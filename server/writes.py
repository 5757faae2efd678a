"""The write path: change a file, commit it, then index it, and acknowledge only what is committed (SPEC §3).

Every writer (the API, the tool, the webhooks, the CLI, the call recorder, the import) comes through
`WritePath`: file edits are serialised by one lock, a file's second write waits for its first one's
commit (git commits whole files, and each commit's `Source:` must be true), and a person's edit that
arrived meanwhile is committed first, as their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec

from server import conflicts, gitmerge, parse, text, vault
from server.gitstage import Exact
from server.gitwriter import GitWriter
from server.handcommit import PersonsEdits
from server.index import Index
from server.markdown import Kind, kind_of
from server.records import Caller
from server.renames import Renamer
from server.vault import MAX_WRITE_BYTES, Loaded, Vault

log = logging.getLogger("memory_bridge.memory")

# Files between two yields to the event loop in a long loop: calls come first.
SLICE = 5

# A change to one file: its current text (None if missing) to its new text (None: leave it).
Change = Callable[[str | None], str | None]
# Index entries of what was written, made once the commit is in: (relpath, what it holds, seq).
Entries = Callable[[], Awaitable[list[tuple[str, Loaded | None, int]]]]


class WriteError(Exception):
    """A write that cannot be done as asked; the message is safe to show to the client."""


class FileFull(WriteError):
    """A write refused because the file would grow past what the service writes (below the loader's limit)."""


class Gate:
    """Lets the service's file writes through, or holds new ones while the branch is merged in the working tree.

    A merge rewrites files; a write landing in the middle would be lost by git or would make git
    refuse the merge. Writes pass one by one; `closed()` waits for those passing to finish.
    """

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._passing = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def passing(self) -> AsyncIterator[None]:
        """Around a file write: waits while the gate is closed."""
        while not self._open.is_set():
            await self._open.wait()
        self._passing += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._passing -= 1
            if self._passing == 0:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def closed(self) -> AsyncIterator[None]:
        """Hold new file writes, and wait for those under way, for as long as this is held."""
        self._open.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._open.set()


class WritePath:
    """One vault's writes: file change → git commit → index update, in that order, one place."""

    def __init__(self, vault_: Vault, index: Index, git: GitWriter, patience: float | None = None) -> None:
        self.vault = vault_
        self.index = index
        self.git = git
        # How long a write waits for a person's git operation in the vault to end before it is refused
        # (OperationInProgress), its file untouched; None: no limit.
        self.patience = patience
        # Held while a file's current text is read, changed and written back.
        self.edit_lock = asyncio.Lock()
        # Closed while a merge (sync) rewrites files in the working tree.
        self.gate = Gate()
        # Files held (written but not yet committed, or a person's edit being committed), with the
        # future their release resolves.
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        # Gives a service-named caller file its caller's name (SPEC §14), and knows where files went.
        self.names = Renamer(vault_, index)
        # A person's files just before their commit: a `phone:` keyed, a name given (SPEC §14).
        self.persons = PersonsEdits(vault_, index, git, self.names, self.gate.passing, self.editing)

    async def write(self, relpath: str, change: Change, line: str, source: str) -> bool:
        """Apply `change` to one file, commit it and update the index. Returns whether anything changed."""
        if kind_of(relpath) is Kind.CALLER:
            change = intact(change)
        return bool(await self.write_many([(relpath, change)], [line], source))

    async def write_many(
        self,
        changes: list[tuple[str, Change]],
        lines: list[str],
        source: str,
        progress: Callable[[int, int], None] | None = None,
        *,
        readable: bool = True,
    ) -> list[str]:
        """Apply changes to files, then commit them together and update the index.

        Each `change` gets a file's current text (None: it does not exist) and returns the new text,
        or None for "nothing to do". The current bytes are read under the edit lock, at write time,
        so a person's edit is never overwritten. Returns the files that changed. With `readable`, a
        service-named caller file whose caller now has a name takes it, in the same commit.
        """
        async with self.holding([relpath for relpath, _ in changes]), contextlib.AsyncExitStack() as locked:
            written: list[tuple[str, str, str, int]] = []
            gone: list[tuple[str, None, int]] = []
            targets: list[str] = []  # the new path of each file in `gone`
            exact: dict[str, Exact] = {}
            refused: list[WriteError | vault.DiskError] = []
            async with self.gate.passing(), self.editing():
                await locked.enter_async_context(self.changing())
                for n, (asked, change) in enumerate(changes, 1):
                    relpath = self.names.current(asked)  # renamed while this write waited for it
                    try:
                        # In a thread: reading, parsing and rewriting a file is a long slice of the loop.
                        bounded = within_limit(relpath, resolved(relpath, change))
                        if readable:
                            bounded = self.names.heading_follows(relpath, bounded)
                        result = await asyncio.to_thread(self.vault.update, relpath, bounded)
                    except (WriteError, vault.DiskError) as exc:
                        refused.append(exc)  # one refused file never holds back the rest of a batch
                        log.warning("%s: %s", relpath, exc)
                        continue
                    if result is not None:
                        target = None
                        if readable:
                            target = await asyncio.to_thread(self.names.give_name, relpath, result.text, result.digest)
                        if target is not None:
                            # One commit: the old path removed, the new one added, which git shows as a rename.
                            gone.append((relpath, None, self.vault.next_seq()))
                            targets.append(target)
                            if result.base is not None:  # a file git may know: its removal is committed
                                exact[relpath] = Exact(result.base, None)
                            lines = [*lines, f"file named: {relpath} -> {target}"]
                            relpath, result = target, msgspec.structs.replace(result, base=None)
                        written.append((relpath, result.text, result.digest, self.vault.next_seq()))
                        exact[relpath] = Exact(result.base, result.data)
                    if progress is not None:
                        progress(n, len(changes))
                    if len(changes) > 1:
                        await asyncio.sleep(0)  # a big batch must not hold up calls

            async def entries() -> list[tuple[str, Loaded | None, int]]:
                # Each renamed file's old path just before its new one (the caller's key then belongs
                # to the new file), and never a turn of the loop between the two: see commit_and_index.
                renamed_to = dict(zip(targets, gone, strict=True))
                found: list[tuple[str, Loaded | None, int]] = []
                for relpath, text, sha, seq in written:
                    if relpath in renamed_to:
                        found.append(renamed_to[relpath])
                    found.append((relpath, await asyncio.to_thread(self.vault.loaded, relpath, text, sha), seq))
                return found

            paths = [relpath for relpath, *_ in gone if relpath in exact] + [relpath for relpath, *_ in written]
            await self.commit_and_index(paths, lines, source, entries, exact)
            if refused and len(changes) == 1:
                raise refused[0]
            return [relpath for relpath, *_ in written]

    async def delete(self, relpath: str, line: str, source: str, before: Callable[[], Awaitable[None]]) -> None:
        """Remove a file in a commit of its own; `before` runs under the edit lock, just before the removal."""
        async with self.holding([relpath]), contextlib.AsyncExitStack() as locked:
            relpath = self.names.current(relpath)  # renamed while this removal waited for it
            async with self.gate.passing(), self.editing():
                await locked.enter_async_context(self.changing())
                await before()
                base = self.vault.delete(relpath)
                seq = self.vault.next_seq()
            # A base with conflict markers is never committed, not even as the person's version before
            # the removal: the removal is staged from the disk instead.
            exact = {relpath: Exact(base, None)} if base is None or not conflicts.found_in(base) else None
            try:
                await self.git.commit([relpath], line, source, exact)
            finally:
                self.index.apply(relpath, None, seq)

    @contextlib.asynccontextmanager
    async def holding(self, paths: list[str], *, bounded: bool = True) -> AsyncIterator[None]:
        """The write path's hold on `paths`, from before their change until their commit is indexed.

        Waits first while a person's git operation is in progress (see `editing`); `bounded`: for at
        most `patience` seconds, then OperationInProgress, nothing written. The call recorder waits
        without a bound: no client is waiting for it.
        """
        await self.git.operations.wait_clear(self.patience if bounded else None)
        async with self._held(paths), contextlib.AsyncExitStack() as also:
            # A file renamed while this waited: its new path is held too, and written instead.
            moved = [now for path in paths if (now := self.names.current(path)) != path]
            if moved:
                await also.enter_async_context(self._held(moved))
            for n, relpath in enumerate([self.names.current(path) for path in paths], 1):
                edited = relpath in self.git.hand_edits or self._edited_behind_our_back(relpath)
                if edited and not self.vault.conflicted(relpath) and await self.persons.committable([relpath]):
                    # A person's edit goes into its own commit first, so it keeps `Source: hand-edit`.
                    await self.git.commit_hand_edits({relpath: "edited"})
                if n % SLICE == 0:
                    await asyncio.sleep(0)
            yield

    async def commit_hand_edits(self, edits: dict[str, str]) -> None:
        """Commit people's changes to files (path -> "edited" or "removed"), as they are on disk, as theirs."""
        async with self._held(list(edits)):
            kept = set(await self.persons.committable([path for path, what in edits.items() if what == "edited"]))
            edits = {path: what for path, what in edits.items() if what != "edited" or path in kept}
            edits = await self.persons.named(edits)
            if edits:
                await self.git.commit_hand_edits(edits)

    async def key_dirty_callers(self) -> None:
        """Key every uncommitted caller file's `phone:` now: before a merge commits people's edits as they are."""
        dirty = [path for path in await gitmerge.dirty_paths(self.git.runner) if kind_of(path) is Kind.CALLER]
        if dirty:
            async with self._held(dirty):
                await self.persons.committable(dirty)

    @contextlib.asynccontextmanager
    async def _held(self, paths: list[str]) -> AsyncIterator[None]:
        """`paths` to ourselves: no write of ours to them is uncommitted, and none starts, until the block ends.

        git commits whole files. A second write to a file whose first write is not committed yet
        would land in the first one's commit, under its Source; a person's edit committed from the
        disk meanwhile would take our write into their commit. So both wait for that commit.
        """
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

    def changing(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The vault's writer lock, held from a file change to its commit (taken once no git operation is in progress).

        The CLI, another process, must not read, change and commit a file between this process's
        write and its commit. Not held while waiting for a person's git operation to end, so the CLI
        and `doctor` can look at the vault meanwhile.
        """
        return self.git.lock.held()

    @contextlib.asynccontextmanager
    async def editing(self) -> AsyncIterator[None]:
        """The edit lock, held only while no person's git operation is in progress in the vault.

        The one check before the service touches a file: a `rebase --abort`, `merge --abort` or
        `reset` would throw away a change written during the operation, after it was acknowledged.
        `holding` waited already; this looks again under the lock, for an operation begun since.
        """
        while True:
            async with self.edit_lock:
                if self.git.operations.current() is None:
                    yield
                    return
            await self.git.operations.wait_clear(self.patience)

    async def commit_and_index(
        self,
        paths: list[str],
        lines: list[str],
        source: str,
        entries: Entries,
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
                # Never right after a removal: a renamed file's new path comes next, and until it is in,
                # its caller would be unknown to a call.
                if n % SLICE == 0 and loaded is not None:
                    await asyncio.sleep(0)

    def _edited_behind_our_back(self, relpath: str) -> bool:
        """Whether the file on disk differs from what the index (and this process) last saw."""
        state = self.index.files.get(relpath)
        if state is not None and state.stat == self.vault.stat(relpath):
            return False  # not touched since it was indexed (a stat costs less than reading the file)
        on_disk = self.vault.digest_of(relpath)
        known = state.digest if state is not None else None
        return on_disk is not None and on_disk != known and not self.vault.own.is_own_write(relpath, on_disk)

    def caller_file(self, key: str, legacy: str | None = None) -> tuple[str, str]:
        """The file of a known caller (and its key in the file), or a new file's path for a new one."""
        for known in (key, legacy):
            if known and (relpath := self.index.caller_path(known)):
                return relpath, known
        return self.vault.new_caller_path(key), key


def within_limit(relpath: str, change: Change) -> Change:
    """Refuse a change that would make a file bigger than the service writes (room below the loader's limit)."""

    def bounded(current: str | None) -> str | None:
        updated = change(current)
        if updated is not None and not text.fits(updated, MAX_WRITE_BYTES):
            what = "the caller's file" if kind_of(relpath) is Kind.CALLER else f"the file {relpath}"
            raise FileFull(f"{what} is full ({MAX_WRITE_BYTES:,} bytes); move older entries out of it first")
        return updated

    return bounded


def resolved(relpath: str, change: Change) -> Change:
    """Refuse to change a file that holds conflict markers: it is on /health, for a person to resolve."""

    def guarded(current: str | None) -> str | None:
        line = None if current is None else conflicts.first_marker(current)
        if line is not None:
            what = "the caller's file" if kind_of(relpath) is Kind.CALLER else f"the file {relpath}"
            raise WriteError(f"{what} has conflict markers (line {line}): resolve the merge first")
        return change(current)

    return guarded


def intact(change: Change) -> Change:
    """Refuse to touch a caller file that does not parse: it is reported on /health and left to a person."""

    def guarded(current: str | None) -> str | None:
        if current is not None:
            parse_or_refuse(current)
        return change(current)

    return guarded


def parse_or_refuse(text: str) -> Caller:
    """A caller file's record, or a WriteError that tells a person to fix the file first."""
    try:
        return parse.parse_caller(text)
    except parse.VaultFileError as exc:
        raise WriteError(f"the caller's file {exc}; fix it first") from None
