"""Sync: the vault and its git remote kept in step (SPEC §11).

Commits are pushed soon after they are made, a few at a time. Every `SYNC_SECONDS`, and at once on
a push event, the remote's branch is fetched and merged. Fetch and push talk to the network and run
beside the git writer, never inside it, so a slow or dead remote holds up no write; a merge rewrites
files and runs inside it, in turn with commits, while the service's file writes wait at the gate.
A push the remote rejects (someone pushed first) is fetched, merged and pushed again, with backoff.
Every round also checks that acknowledged commits are still in the branch (`server.acknowledged`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from server import gitmerge, mergefile
from server.config import Settings
from server.gitmerge import MergeOutcome
from server.gitrun import GitError
from server.gitwriter import GitWriter
from server.remote import without_credentials
from server.writes import Gate

log = logging.getLogger("memory_bridge.sync")

REMOTE = "origin"
# Commits made within this long of each other go out in one push.
_PUSH_BATCH_SECONDS = 0.1
# A rejected push is fetched, merged and pushed again this many times in a row before waiting for the next round.
_PUSH_TRIES = 6
# After a failed round the next one waits this long, doubling up to SYNC_SECONDS.
_FIRST_BACKOFF_SECONDS = 0.5


@dataclass
class SyncStatus:
    """What `/health` and `doctor` report about sync; the remote is shown without credentials."""

    remote: str
    branch: str
    ahead: int | None = None
    behind: int | None = None
    last_fetch_at: float | None = None
    last_push_at: float | None = None
    last_merge_at: float | None = None
    merges: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    # Files the merge driver settled by a rule a person should check (remote-won keys, prose kept twice).
    merge_conflicts: list[dict[str, object]] = dataclasses.field(default_factory=list)


class SyncError(RuntimeError):
    """The vault cannot sync with its remote as configured; the message says what to do."""


class Joined(enum.Enum):
    """How a vault joined its remote at start-up."""

    CLONED = "cloned"  # a new vault, cloned from the remote
    SEEDED = "seeded"  # a new vault or an existing one, and a remote without the branch: the first push makes it
    JOINED = "joined"  # an existing vault whose history the remote shares
    OFFLINE = "offline"  # an existing vault, the remote not reachable now: sync catches up later


_FIRST_CLONE_SECONDS = 300.0
# What a remote says when another push to the branch was landing at the same moment.
_RACED_PUSH = ("failed to update ref", "cannot lock ref", "failed to lock")
# What git says when the remote has no such branch (an empty repository).
_NO_BRANCH = "couldn't find remote ref"
_START_FETCH_SECONDS = 10.0


def join_remote(settings: Settings, git: GitWriter, created: bool) -> Joined:
    """At start-up, before anything is served: point the vault at GIT_REMOTE and fetch it.

    A vault created just now is cloned from the remote (an empty remote receives the starter vault
    with the first push). A vault whose history is unrelated to the remote's stops start-up: merging
    two vaults is a person's decision. Raises SyncError with what to do.
    """
    url, branch, runner = settings.git_remote, settings.git_branch, git.runner
    assert url is not None
    shown = without_credentials(url)
    current = runner.run_sync("config", "--get", f"remote.{REMOTE}.url", check=False).stdout.strip()
    if current != url:
        runner.run_sync("config", f"remote.{REMOTE}.url", url)
    refspec = f"+refs/heads/{branch}:refs/remotes/{REMOTE}/{branch}"
    # With the fetch refspec configured, a push also moves the remote-tracking ref: ahead/behind stay true.
    runner.run_sync("config", f"remote.{REMOTE}.fetch", refspec)
    wait = _FIRST_CLONE_SECONDS if created else _START_FETCH_SECONDS
    try:
        runner.run_sync("fetch", "-q", "--no-tags", REMOTE, refspec, timeout=wait)
    except GitError as exc:
        if _NO_BRANCH in str(exc):
            log.info("the remote %s has no branch %s yet: the vault's first push creates it", shown, branch)
            return Joined.SEEDED
        if not created:
            log.warning("cannot reach the remote %s now (sync catches up once it answers): %s", shown, exc)
            return Joined.OFFLINE
        shutil.rmtree(git.root / ".git", ignore_errors=True)  # the next start tries the clone again
        raise SyncError(
            f"cannot clone the new vault from GIT_REMOTE ({shown}): {exc}. Check the URL and its credentials, "
            "or unset GIT_REMOTE to start a vault without sync"
        ) from None
    tracking = f"refs/remotes/{REMOTE}/{branch}"
    if created:
        runner.run_sync("reset", "-q", "--hard", tracking)
        log.info("cloned the vault from %s (%s)", shown, branch)
        return Joined.CLONED
    head = git.head()
    if head is not None and runner.run_sync("merge-base", head, tracking, check=False).returncode != 0:
        raise SyncError(
            f"the vault at {git.root} has a history unrelated to branch {branch} of GIT_REMOTE ({shown}). "
            "To serve the remote's vault, move this folder away and start again (it is cloned); to keep this "
            "vault, point GIT_REMOTE at an empty repository (it is pushed there)"
        )
    return Joined.JOINED


class Sync:
    """One vault's sync loop (and, without a remote, just the check that acknowledged commits stay)."""

    def __init__(self, settings: Settings, git: GitWriter, gate: Gate) -> None:
        self.git = git
        self.gate = gate
        self.remote_url = settings.git_remote
        self.branch = settings.git_branch
        self.interval = settings.sync_seconds
        self.status = SyncStatus(without_credentials(self.remote_url or ""), self.branch)
        self._wake = asyncio.Event()
        # Held while a fetch or push runs: an erasure waits for it. Landing after the rewrite, a fetch
        # would bring the erased caller's objects back into the vault, and a push of the old history
        # would point the remote-tracking ref (and the remote) at them again.
        self.network = asyncio.Lock()
        self._fetch_now = False
        # Runs before a merge commits people's uncommitted edits: keys a caller file's `phone:` (SPEC §14).
        self.before_merge: Callable[[], Awaitable[None]] | None = None
        self._push_wanted = False
        self._task: asyncio.Task[None] | None = None
        self._conflicts_stamp: int | None = None
        # The remote's tip as last merged (or found merged already): no need to look again until it moves.
        self._merged_tip: str | None = None
        # Erasure (SPEC §14, `server.eraser`): a fetched tip passes here before it is merged (the commit
        # to merge, or None: nothing to merge), the remote's old tip a rewrite is pushed over with a
        # lease, and what runs once that push is in.
        self.follow: Callable[[str], Awaitable[str | None]] | None = None
        self.lease: str | None = None
        self.after_forced_push: Callable[[], Awaitable[None]] | None = None

    @property
    def enabled(self) -> bool:
        """Whether a remote is configured."""
        return self.remote_url is not None

    @property
    def tracking(self) -> str:
        """The remote-tracking ref of the synced branch."""
        return f"refs/remotes/{REMOTE}/{self.branch}"

    async def start(self) -> None:
        """Start the loop; every commit the writer makes from now on is pushed soon after."""
        self.git.on_commit = self._committed
        self._fetch_now = self._push_wanted = True
        self._task = asyncio.create_task(self._loop(), name="sync")

    async def stop(self) -> None:
        """Stop the loop, after one last push of what is committed (bounded: the remote may be gone)."""
        self.git.on_commit = None
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self.enabled:
            with contextlib.suppress(GitError, TimeoutError):
                await asyncio.wait_for(self._push(), 10)

    def poke(self) -> None:
        """Fetch and merge at once (a push event from the git host)."""
        self._fetch_now = True
        self._wake.set()

    def _committed(self) -> None:
        self._push_wanted = True
        self._wake.set()

    async def _loop(self) -> None:
        backoff = _FIRST_BACKOFF_SECONDS
        next_fetch = 0.0
        while True:
            fetch = self._fetch_now or time.monotonic() >= next_fetch
            self._fetch_now = False
            if fetch:
                next_fetch = time.monotonic() + self.interval
            try:
                await self.round(fetch=fetch)
            except GitError as exc:
                self._failed(exc)
                await asyncio.sleep(min(backoff, self.interval))
                backoff = min(backoff * 2, self.interval)
                self._fetch_now = self._push_wanted = True
                continue
            backoff = _FIRST_BACKOFF_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_fetch - time.monotonic()))
            self._wake.clear()
            if self._push_wanted and not self._fetch_now:
                await asyncio.sleep(_PUSH_BATCH_SECONDS)  # let the commits of a burst go out together

    async def round(self, fetch: bool) -> None:
        """One round: fetch (if `fetch`), keep acknowledged commits, merge what came, push what is ours."""
        if self.enabled and fetch:
            await self._fetch()  # first: the network is the slow part, and needs no turn in the writer
        if not self.git.acknowledged.known_held_by(self.git.committer.head_from_files()):
            await self.git.keep_acknowledged()  # the branch moved by other hands: a turn in the writer to check
        if not self.enabled:
            self._read_conflicts()
            return
        await self._merge_fetched()
        self._push_wanted = False
        for attempt in range(_PUSH_TRIES):
            if not await self._ahead() or await self._push():
                break
            # Someone pushed first: take their commits in, then try again, with a growing pause.
            await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
            await self._fetch()
            await self._merge_fetched()
        else:
            raise GitError("the remote kept rejecting the push (others pushing all the time); trying again later")
        await self._count()
        self.status.last_error = None

    async def _fetch(self) -> None:
        refspec = f"+refs/heads/{self.branch}:{self.tracking}"
        try:
            async with self.network:
                await self.git.runner.run_network("fetch", "-q", "--no-tags", "--no-write-fetch-head", REMOTE, refspec)
        except GitError as exc:
            if _NO_BRANCH not in str(exc):
                raise
            # An empty remote (or one without the branch): the next push creates it.
        self.status.last_fetch_at = time.time()

    async def _merge_fetched(self) -> None:
        runner = self.git.runner
        tip = await gitmerge.rev(runner, self.tracking)
        if tip is None or tip == self._merged_tip:
            return  # the remote has no such branch yet (the first push makes it), or nothing new
        head = await gitmerge.rev(runner, "HEAD")
        if head is not None and await gitmerge.is_ancestor(runner, tip, head):
            self._merged_tip = tip
            return
        if self.before_merge is not None:
            await self.before_merge()
        async with self.gate.closed():
            if self.follow is not None and (tip := await self.follow(tip)) is None:
                return
            merged = await self.git.merge(tip, f"merge {self.branch} from the remote")
        if merged.outcome is MergeOutcome.REFUSED:
            raise GitError(f"cannot merge the remote's {self.branch}: {merged.detail}")
        self._merged_tip = tip
        if merged.outcome is not MergeOutcome.UP_TO_DATE:
            self._read_conflicts()
            self.status.merges += 1
            self.status.last_merge_at = time.time()
            log.info("merged %d file(s) from the remote (%s)", len(merged.changed), merged.outcome.value)

    async def _ahead(self) -> bool:
        """Whether the branch has commits the remote's (as last fetched or pushed) does not."""
        head = self.git.committer.head_from_files() or await gitmerge.rev(self.git.runner, "HEAD")
        tip = await gitmerge.rev(self.git.runner, self.tracking)
        if head is None or head == tip:
            return False
        return tip is None or not await gitmerge.is_ancestor(self.git.runner, head, tip)

    async def _push(self) -> bool:
        """Push the branch; False if the remote turned it away for now (someone pushed first, or at the same moment)."""
        async with self.network:  # an erasure that ran while this waited has set the lease by now
            lease = self.lease
            # After an erasure the rewritten history replaces the remote's, only if nobody pushed meanwhile.
            forced = (f"--force-with-lease=refs/heads/{self.branch}:{lease}",) if lease else ()
            code, out = await self.git.runner.run_network(
                "push", "--porcelain", *forced, REMOTE, f"HEAD:refs/heads/{self.branch}", ok=(0, 1)
            )
        if code == 0:
            self.status.last_push_at = time.time()
            if lease is not None and self.lease == lease:
                self.lease = None
                if self.after_forced_push is not None:
                    await self.after_forced_push()
            return True
        # `[rejected]`: the remote has commits we have not merged. `failed to update ref` / `cannot
        # lock ref`: another push to the same branch was landing at that moment. Both: merge, try again.
        if "[rejected]" in out or any(words in out for words in _RACED_PUSH):
            return False
        raise GitError(f"git push failed: {' '.join(out.split())[:300]}")

    async def _count(self) -> None:
        code, out = await self.git.runner.run(
            "rev-list", "--left-right", "--count", f"HEAD...{self.tracking}", ok=(0, 128)
        )
        if code == 0:
            ahead, behind = out.split()
            self.status.ahead, self.status.behind = int(ahead), int(behind)

    def _read_conflicts(self) -> None:
        """Refresh the list of files the merge driver settled, when its record changed."""
        record = self.git.root / ".git" / mergefile.CONFLICTS_FILE
        try:
            stamp = record.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if stamp != self._conflicts_stamp:
            self._conflicts_stamp = stamp
            found = mergefile.read_conflicts(self.git.root / ".git")
            self.status.merge_conflicts = [msgspec.to_builtins(conflict) for conflict in found]

    def _failed(self, exc: GitError) -> None:
        text = without_credentials(str(exc))
        if text != self.status.last_error:
            log.warning("sync with the remote failed (retried; calls and writes go on): %s", text)
        self.status.last_error = text
        self.status.last_error_at = time.time()
