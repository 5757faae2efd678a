"""The git writer: one serialised writer of commits per vault (SPEC §3).

One writer task per vault drains a queue of commit requests. Requests that arrive while a commit is
running are committed together in the next one (one commit per source, each change listed), which is
what lets many concurrent writers be acknowledged quickly without one `git commit` each. Commands
start in `server.gitrun` (the only code that runs git); files reach the index through `server.gitstage`
and become a commit in `server.gitcommit`. Merges (sync, and acknowledged commits a person's git
dropped) run here too, in turn with commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from server import gitmerge, gitstage
from server.acknowledged import Acknowledged, Held
from server.gitcommit import Committer, message
from server.gitjobs import GitStatus, Job, Retry, gather
from server.gitlock import WriterLock
from server.gitmerge import Merged, MergeOutcome
from server.gitrun import GitError, GitRunner
from server.gitstage import Exact, blob_id
from server.gitstate import OperationInProgress, Operations
from server.worker import Worker

log = logging.getLogger("memory_bridge.git")

SOURCES = ("api", "webhook", "tool", "cli", "hand-edit", "sync", "retention")
# Housekeeping (`git gc --auto`: pack loose objects once there are many) runs after this long
# without a commit, in the background, at the worker's low priority.
_HOUSEKEEPING_IDLE_SECONDS = 30.0
_GC_AUTO = 6700  # git's own default threshold of loose objects
_KNOWN_BLOBS = 4_096


class GitWriter:
    """Serialises every git write of one vault."""

    def __init__(
        self, root: Path, author_name: str, author_email: str, conflicted: Callable[[str], bool] | None = None
    ) -> None:
        self.root = root
        # Whether a file holds git's conflict markers: such a file is never committed (SPEC §11).
        self._conflicted = conflicted or (lambda relpath: False)
        self.status = GitStatus()
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task[None] | None = None
        # Changes whose commit failed: they stay on disk and ride along with the next commit.
        self._failed = Retry({}, [])
        # Files a person changed whose hand-edit commit is still waiting for its quiet period.
        self.hand_edits: set[str] = set()
        # Another memory-bridge process (the CLI beside a running server) commits to the same vault.
        self.lock = WriterLock(root)
        # path -> blob this writer last committed there from exact bytes (saves asking git); recent paths only.
        self._blobs: OrderedDict[str, str | None] = OrderedDict()
        self.runner = GitRunner(root, author_name, author_email)
        # Called after each commit this writer makes (sync pushes soon after).
        self.on_commit: Callable[[], None] | None = None
        # The newest commit whose changes were acknowledged: it must stay in the branch's history.
        self.acknowledged = Acknowledged(root)
        # A person's merge, rebase or cherry-pick in the working tree: no commit is made while one lasts.
        self.operations = Operations(root)
        self.committer = Committer(self.runner, self.operations)

    # -- running git -----------------------------------------------------------------------------

    # -- repository set-up -----------------------------------------------------------------------

    def ensure_repo(self, branch: str = "main") -> bool:
        """Make the vault a git repository of its own, on `branch`; True if it was created now."""
        if (self.root / ".git").exists():
            return False
        self.runner.run_sync("init", "-q", "-b", branch)
        return True

    def head(self) -> str | None:
        """The current commit id, or None before the first commit."""
        proc = self.runner.run_sync("rev-parse", "--verify", "-q", "HEAD", check=False)
        return proc.stdout.strip() or None

    def has_commit(self) -> bool:
        """Whether the branch has a commit: read from `.git/` when it says so plainly, else asked of git.

        Start-up asks this of every vault; with a hundred tenants, a git process each is most of the wait.
        """
        git_dir = self.root / ".git"
        try:
            head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
            ref = head.removeprefix("ref: ")
            if ref != head and ref.startswith("refs/heads/") and (git_dir / ref).read_text(encoding="ascii").strip():
                return True
        except (OSError, UnicodeDecodeError):
            pass  # a packed ref, a detached or unborn HEAD, a .git file: git knows
        return self.head() is not None

    def dirty_paths(self) -> list[str]:
        """Paths with uncommitted changes (including untracked files), vault-relative."""
        # At start-up nothing is served yet: git may use every core to look at every file.
        threads = ("-c", "core.preloadIndex=true", "-c", "index.threads=true")
        with self.lock.hold():  # status refreshes the index: not while another process commits
            out = self.runner.run_sync(*threads, "status", "--porcelain", "-z", "--untracked-files=all").stdout
        paths = []
        entries = out.split("\0")
        i = 0
        while i < len(entries):
            entry = entries[i]
            i += 1
            if len(entry) < 4:
                continue
            paths.append(entry[3:])
            if entry[0] in "RC":  # a rename carries its old path as the next entry
                paths.append(entries[i])
                i += 1
        return paths

    def commit_sync(self, paths: list[str], lines: list[str], source: str) -> str | None:
        """Commit `paths` now, outside the writer task (start-up and tests only)."""
        with self.lock.hold():
            self.runner.recover_lock()
            gitstage.stage_sync(self.runner, paths)
            proc = self.runner.run_sync(
                "commit", "-q", "--no-verify", "-F", "-", check=False, stdin=message(lines, source)
            )
        if proc.returncode != 0:
            if "nothing" in proc.stdout + proc.stderr:
                return None
            raise GitError(f"git commit failed: {(proc.stderr or proc.stdout).strip()}")
        sha = self.head()
        self._note_commit(sha, lines)
        return sha

    # -- the writer task -------------------------------------------------------------------------

    async def start(self, worker: Worker | None = None) -> None:
        """Start the writer task; with a `worker`, git runs in that process."""
        self.runner.worker = worker
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop(), name="git-writer")

    async def stop(self) -> None:
        """Commit everything queued, then stop."""
        if self._queue is None or self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self.lock.close()

    @property
    def alive(self) -> bool:
        """Whether the writer task is running."""
        return self._task is not None and not self._task.done()

    async def commit(
        self, paths: list[str], lines: str | list[str], source: str, exact: dict[str, Exact] | None = None
    ) -> str | None:
        """Commit the changes to `paths`, each described by a line; returns once they are in git.

        Paths in `exact` are committed as exactly the change described there (after a `hand-edit`
        commit of its base, if that differs from git's version); the others as they are on disk.
        Returns the commit id, or None if there was nothing to commit. Raises GitError on failure;
        the file change itself stays on disk and is committed with the next write that succeeds.
        """
        if source not in SOURCES:
            raise ValueError(f"unknown commit source {source!r}")
        if self._queue is None:
            raise RuntimeError("the git writer is not running")
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.status.pending += 1
        await self._queue.put(Job(paths, [lines] if isinstance(lines, str) else lines, source, done, exact))
        return await done

    async def commit_hand_edits(self, edits: dict[str, str]) -> None:
        """Commit people's changes to files (path -> "edited" or "removed") in one `Source: hand-edit` commit."""
        try:
            await self.commit(list(edits), [f"hand edit: {path} {what}" for path, what in edits.items()], "hand-edit")
        finally:
            # Only once committed: until then a service write to these files waits for this commit
            # (`WritePath.holding`), which stages them as they are on disk, and may wait for a long
            # time while a person's git operation is in progress.
            self.hand_edits.difference_update(edits)

    async def exclusive(self, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run `work` in turn with commits, alone and under the writer lock; returns what it returns."""
        if self._queue is None:
            raise RuntimeError("the git writer is not running")
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(Job([], [], "sync", done, work=work))
        return await done

    async def merge(self, ref: str, subject: str) -> Merged:
        """Merge commit `ref` into the branch (people's uncommitted edits committed first), in turn with commits."""
        merged: Merged = await self.exclusive(lambda: self._merge(ref, subject))
        return merged

    async def keep_acknowledged(self) -> None:
        """Check, in turn with commits, that every acknowledged change is still in the branch (see below)."""
        await self.exclusive(self._keep_acknowledged)

    async def _run_work(self, job: Job) -> None:
        assert job.work is not None
        try:
            result = await job.work()
        except Exception as exc:  # the waiting caller gets the failure; the writer goes on
            if not job.done.done():
                job.done.set_exception(exc)
            return
        if not job.done.done():
            job.done.set_result(result)

    async def _merge(self, ref: str, subject: str) -> Merged:
        # A file with conflict markers stays out: if the merge needs it, git refuses and says so.
        dirty = [path for path in await gitmerge.dirty_paths(self.runner) if not self._conflicted(path)]
        if dirty:
            # git would refuse to merge over them: a person's edits still in their quiet period are
            # committed now, as theirs.
            await gitstage.stage(self.runner, dirty)
            lines = [f"hand edit: {path} edited" for path in dirty]
            self._note_commit(await self.committer.commit(message(lines, "hand-edit")), lines)
            self.hand_edits.difference_update(dirty)
        merged = await gitmerge.merge_in(self.runner, ref, subject, "sync")
        if merged.outcome in (MergeOutcome.MERGED, MergeOutcome.FAST_FORWARD):
            # The merge rewrote files behind this writer's back: what it knew of them is stale.
            self._blobs.clear()
            self.committer.forget_tree()
            self._note_commit(merged.head, [subject])
        return merged

    async def _keep_acknowledged(self) -> None:
        """Merge acknowledged commits back if the branch moved so that they left its history."""
        held = await self.acknowledged.held_by(self.runner, await self.committer.head())
        if held is Held.YES:
            return
        sha = self.acknowledged.sha or ""
        if held is Held.GONE:
            log.error("the acknowledged commit %s is no longer in the repository: nothing to merge back", sha[:12])
            return
        log.warning(
            "the branch moved and left acknowledged changes out of its history (a reset, rebase or force-push): "
            "merging them back from %s",
            sha[:12],
        )
        merged = await self._merge(sha, "restore acknowledged changes the branch had lost")
        if merged.outcome is MergeOutcome.REFUSED:
            self.status.last_error = f"acknowledged changes left the branch; merging them back failed: {merged.detail}"
            log.error("%s", self.status.last_error)
            return
        self.status.restored += 1
        self.status.last_restored_at = time.time()

    async def _loop(self) -> None:
        assert self._queue is not None
        commits_since_housekeeping = 0
        while True:
            try:
                jobs = [await asyncio.wait_for(self._queue.get(), _HOUSEKEEPING_IDLE_SECONDS)]
            except TimeoutError:
                if commits_since_housekeeping:
                    commits_since_housekeeping = 0
                    await self._housekeeping()
                continue
            commits_since_housekeeping += 1
            await gather(self._queue, jobs)
            while jobs:
                # Commits up to the next piece of work run first, grouped by source; then that work alone.
                cut = next((n for n, job in enumerate(jobs) if job.work is not None), len(jobs))
                commits, work, jobs = jobs[:cut], jobs[cut : cut + 1], jobs[cut + 1 :]
                by_source: dict[str, list[Job]] = {}
                for job in commits:
                    by_source.setdefault(job.source, []).append(job)
                for source, group in by_source.items():
                    if not await self._after_operations(group):
                        continue
                    async with self.lock.held():
                        await self._keep_acknowledged()
                        await self._commit_group(source, group)
                for job in work:
                    if not await self._after_operations([job]):
                        continue
                    async with self.lock.held():
                        await self._run_work(job)
                for _ in commits + work:
                    self._queue.task_done()

    async def _commit_group(self, source: str, jobs: list[Job]) -> None:
        paths = [p for job in jobs for p in job.paths] + list(self._failed.paths)
        lines = [*(line for job in jobs for line in job.lines), *self._failed.lines]
        exact = {path: change for job in jobs for path, change in (job.exact or {}).items()}
        try:
            if exact:
                await self._bases_first(exact)
                await gitstage.stage_exact(self.runner, {path: change.data for path, change in exact.items()})
            from_disk = [path for path in paths if path not in exact]
            for path in from_disk:
                self._blobs.pop(path, None)  # staged from disk: this writer no longer knows its blob
            await gitstage.stage(self.runner, from_disk)
            sha = await self.committer.commit(message(lines, source, more=self._failed.more))
            self._note_commit(sha, lines)
            self.status.last_error = None
            self._failed = Retry({}, [])
            self._know_blobs({path: blob_id(change.data) for path, change in exact.items()})
        except Exception as exc:  # any failure must reach the waiting writers, never stall them
            for path in exact:
                self._blobs.pop(path, None)
            self.status.last_error = str(exc)
            for job in jobs:
                self._failed.add(job.paths, job.lines)
            log.error("git commit failed (%d change(s) stay on disk, retried with the next commit): %s", len(jobs), exc)
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(GitError(str(exc)))
            self.status.pending -= len(jobs)
            return
        for job in jobs:
            if not job.done.done():
                job.done.set_result(sha)
        self.status.pending -= len(jobs)

    def history_rewritten(self, head: str | None) -> None:
        """An erasure rewrote every ref (in this writer's turn): forget what was known of the old history."""
        self._blobs.clear()
        self.committer.forget_tree()
        self._failed = Retry({}, [])  # their files were committed, or erased
        if head is not None:
            self._note_commit(head, ["erase a caller"])

    # -- people's git operations (SPEC §11) ------------------------------------------------------

    async def _after_operations(self, jobs: list[Job]) -> bool:
        """Wait while a person's merge, rebase or cherry-pick is in progress; False if `jobs` had to fail.

        Waits outside the writer lock, so that the CLI and `doctor` can look at the vault meanwhile. Only
        when the service stops before the operation ends do the jobs fail; their files stay on disk and
        are committed with the next commit (or at the next start).
        """
        try:
            waited = await self.operations.wait_clear(None)
        except OperationInProgress as exc:
            for job in jobs:
                self._failed.add(job.paths, job.lines)
                if not job.done.done():
                    job.done.set_exception(GitError(str(exc)))
            self.status.pending -= len(jobs)
            return False
        if waited:
            # The person's git moved HEAD and rewrote git's index: what this writer knew of them is stale.
            self._blobs.clear()
            self.committer.forget_tree()
        return True

    async def _bases_first(self, exact: dict[str, Exact]) -> None:
        """Commit, as a person's change, any base that is not what git has: a hand edit made just before ours."""
        unknown = [path for path in exact if path not in self._blobs]
        committed = {path: self._blobs[path] for path in exact if path in self._blobs}
        if unknown:
            committed.update(await gitstage.index_blobs(self.runner, unknown))
        behind = {path: change.base for path, change in exact.items() if blob_id(change.base) != committed[path]}
        if not behind:
            return
        lines = [f"hand edit: {path} {'edited' if base is not None else 'removed'}" for path, base in behind.items()]
        await gitstage.stage_exact(self.runner, behind)
        sha = await self.committer.commit(message(lines, "hand-edit"))
        self._note_commit(sha, lines)
        log.info("committed %d hand edit(s) made just before the service's own change", len(behind))

    def _know_blobs(self, blobs: dict[str, str | None]) -> None:
        for path, blob in blobs.items():
            self._blobs[path] = blob
            self._blobs.move_to_end(path)
        while len(self._blobs) > _KNOWN_BLOBS:
            self._blobs.popitem(last=False)

    async def _housekeeping(self) -> None:
        # git's own threshold decides whether there is anything to do; the gc detaches and works on
        # in the background, so a write arriving now is not held up.
        try:
            await self.runner.run("-c", f"gc.auto={_GC_AUTO}", "gc", "--auto", "--quiet")
        except GitError as exc:
            log.warning("git housekeeping failed (the vault is fine; it is tried again later): %s", exc)

    def _note_commit(self, sha: str | None, lines: list[str]) -> None:
        if sha is None:
            return
        self.status.last_commit = sha
        self.status.last_commit_at = time.time()
        self.acknowledged.note(sha)
        if self.on_commit is not None:
            self.on_commit()
