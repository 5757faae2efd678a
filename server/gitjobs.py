"""What the git writer's queue holds: a job, the changes whose commit is retried, and its status.

Also how the writer gathers the jobs of one commit: waiting while writes keep coming, briefly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from server.gitcommit import MAX_LISTED
from server.gitstage import Exact

# A commit waits for more writes while they keep coming (a step apart at most), up to the longest.
_GATHER_QUIET_SECONDS = 0.005
_GATHER_MAX_SECONDS = 0.03


@dataclass
class Job:
    """One request to the writer: files to commit (with their lines and source), or work to run alone."""

    paths: list[str]
    lines: list[str]
    source: str
    done: asyncio.Future[Any]
    exact: dict[str, Exact] | None = None
    # Set for work that must run alone, between commits (a merge): it runs instead of a commit.
    work: Callable[[], Awaitable[Any]] | None = None


@dataclass
class Retry:
    """Changes whose commit failed: their paths, and a bounded description of them."""

    paths: dict[str, None]
    lines: list[str]
    more: int = 0

    def add(self, paths: list[str], lines: list[str]) -> None:
        """Carry `paths` to the next commit; keep at most MAX_LISTED lines, count the rest."""
        self.paths.update(dict.fromkeys(paths))
        room = max(0, MAX_LISTED - len(self.lines))
        self.lines.extend(f"{line} (commit retried)" for line in lines[:room])
        self.more += max(0, len(lines) - room)


@dataclass
class GitStatus:
    """What `/health` reports about git."""

    last_commit: str | None = None
    last_commit_at: float | None = None
    last_error: str | None = None
    pending: int = 0
    # Acknowledged commits that dropped out of the branch's history and were merged back.
    restored: int = 0
    last_restored_at: float | None = None


async def gather(queue: asyncio.Queue[Job], jobs: list[Job]) -> None:
    """Add the jobs that arrive while writes keep coming, for a moment at most, to `jobs`.

    Writers acknowledged by the last commit need a moment to send their next write; waiting for
    them makes concurrent writers share commits instead of splitting into alternating halves, and
    each commit costs git about the same whatever it holds. A lone write waits one quiet step.
    """
    loop = asyncio.get_running_loop()
    until = loop.time() + _GATHER_MAX_SECONDS
    while True:
        await asyncio.sleep(_GATHER_QUIET_SECONDS)
        came = 0
        while not queue.empty():
            jobs.append(queue.get_nowait())
            came += 1
        if not came or loop.time() >= until:
            return
