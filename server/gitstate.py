"""A person's git operation in progress in the vault (merge, rebase, cherry-pick, revert), and waiting for its end.

Read from the files git keeps in `.git/` while one is under way, never by starting git: a check is
a few `stat` calls, cheap enough for every write. While an operation is in progress the service
commits nothing and touches no file (SPEC §11): git's index holds the person's unresolved merge, HEAD
may be detached on a commit being rebased, and `--abort` would throw away whatever was written
meanwhile. `Operations.wait_clear` is where writers wait; one poll per vault serves them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("memory_bridge.git")

# How often the files are looked at again while an operation is in progress.
POLL_SECONDS = 0.075


class Operation(enum.Enum):
    """Which git operation a person left in progress in the vault's working tree."""

    MERGE = "merge"
    REBASE = "rebase"
    CHERRY_PICK = "cherry-pick"
    REVERT = "revert"


# What git leaves in `.git/` while each is in progress. A rebase stopped on a conflict (or for an
# edit) also leaves HEAD detached: its folder says so. `git am` uses `rebase-apply/` too.
_MARKERS = (
    ("MERGE_HEAD", Operation.MERGE),
    ("rebase-merge", Operation.REBASE),
    ("rebase-apply", Operation.REBASE),
    ("CHERRY_PICK_HEAD", Operation.CHERRY_PICK),
    ("REVERT_HEAD", Operation.REVERT),
)

# How a person ends each one (for messages).
_HOW_TO_END = {
    Operation.MERGE: "commit the resolved files, or run `git merge --abort`",
    Operation.REBASE: "run `git rebase --continue` once resolved, or `git rebase --abort`",
    Operation.CHERRY_PICK: "commit the resolved files, or run `git cherry-pick --abort`",
    Operation.REVERT: "commit the resolved files, or run `git revert --abort`",
}


@dataclass(frozen=True)
class InProgress:
    """An operation in progress and when it began (the time git wrote its state, in seconds since the epoch)."""

    operation: Operation
    since: float

    def describe(self) -> str:
        """What is going on and what ends it, in words for a person."""
        started = time.strftime("%H:%M:%S", time.localtime(self.since))
        return (
            f"a git {self.operation.value} is in progress in the vault (since {started}): {_HOW_TO_END[self.operation]}"
        )


class OperationInProgress(Exception):
    """A write that waited for a person's git operation to end, in vain; nothing was written."""


def in_progress(root: Path) -> Operation | None:
    """The operation in progress in the git repository of vault `root`, or None."""
    try:
        # One listing of a folder of some twenty names costs a third of five `stat` calls.
        names = set(os.listdir(os.path.join(root, ".git")))
    except OSError:
        return None
    return next((operation for name, operation in _MARKERS if name in names), None)


def state(root: Path) -> InProgress | None:
    """The operation in progress and since when, or None."""
    git_dir = os.path.join(root, ".git")
    for name, operation in _MARKERS:
        path = os.path.join(git_dir, name)
        try:
            began = os.lstat(path).st_mtime
            if operation is Operation.REBASE:
                # The folder's own time moves with every step; the files written when it began stay.
                with os.scandir(path) as entries:
                    began = min([began, *(entry.stat(follow_symlinks=False).st_mtime for entry in entries)])
        except OSError:
            continue  # absent, or gone while we looked
        return InProgress(operation, began)
    return None


class Operations:
    """One vault's view of people's git operations: asked before each commit and each file write."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Writers waiting now (for /health).
        self.waiting = 0
        self._cleared: asyncio.Event | None = None
        self._poll: asyncio.Task[None] | None = None
        self._stopping = False

    def current(self) -> Operation | None:
        """The operation in progress now, or None."""
        return in_progress(self.root)

    async def wait_clear(self, patience: float | None) -> bool:
        """Return once no operation is in progress; True if one was (and this waited for its end).

        Raises OperationInProgress after `patience` seconds (None: no limit), or at once when the
        service is stopping.
        """
        if self.current() is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = None if patience is None else loop.time() + patience
        self.waiting += 1
        try:
            while (found := state(self.root)) is not None:
                if self._stopping:
                    raise OperationInProgress(f"not saved while the service stops: {found.describe()}")
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise OperationInProgress(f"not saved: {found.describe()}; then try again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cleared_event().wait(), left)
        finally:
            self.waiting -= 1
        return True

    def stop_waiting(self) -> None:
        """The service is stopping: waiters give up now (and later ones at once) while an operation lasts."""
        self._stopping = True
        if self._cleared is not None:
            self._cleared.set()  # wakes them; each looks again and gives up

    def _cleared_event(self) -> asyncio.Event:
        """An event set once the operation in progress has ended (one poll task serves every waiter)."""
        if self._cleared is None or self._poll is None or self._poll.done():
            self._cleared = asyncio.Event()
            self._poll = asyncio.create_task(self._watch(self._cleared), name="git-operation-watch")
        return self._cleared

    async def _watch(self, cleared: asyncio.Event) -> None:
        found = state(self.root)
        if found is not None:
            log.warning("%s; the service commits nothing and writes no file until it ends", found.describe())
        while not self._stopping and self.current() is not None:
            await asyncio.sleep(POLL_SECONDS)
        if found is not None and not self._stopping:
            log.info(
                "the git %s in the vault has ended; %d waiting write(s) go on", found.operation.value, self.waiting
            )
        cleared.set()
