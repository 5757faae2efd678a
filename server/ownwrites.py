"""Which vault files hold this process's own writes, so the watcher can tell them from a person's.

One owner: the `Vault` holds one `OwnWrites` (`vault.own`). Its writes record their bytes here;
the write path records the worker process's writes and claims the files the worker is rewriting;
the watcher asks, and forgets a file once someone else's bytes are in service.
"""

from __future__ import annotations

import asyncio


class OwnWrites:
    """Own writes by content hash and by stat signature, and the files the worker is rewriting now."""

    def __init__(self) -> None:
        # relpath -> digest of the bytes this process last wrote there.
        self._written: dict[str, str] = {}
        # relpath -> stat signature of a file the worker process wrote for this one (see `note`).
        self._written_stat: dict[str, int] = {}
        # Files the worker process is rewriting for this one right now: whatever is on disk there
        # is in flux until the write path takes the worker's answer.
        self._claimed: set[str] = set()
        # Waiting for the next release (see `released`).
        self._waiters: list[asyncio.Future[None]] = []
        # Files this process moved to another path (a caller file taking its caller's name): gone
        # from the disk before the write path, once committed, takes them out of the index.
        self._moved_away: set[str] = set()

    def wrote(self, relpath: str, sha: str) -> None:
        """This process is putting these bytes at `relpath` itself (recorded before the rename)."""
        self._written[relpath] = sha
        self._written_stat.pop(relpath, None)

    def note(self, relpath: str, sha: str, stat: int) -> None:
        """Recognise these bytes at `relpath`, and the file with this stat signature, as this process's own.

        The worker process wrote them for this one, by renaming a new file into place, and took the
        stat right after: a later change of the file, by anyone, has another inode or timestamp.
        """
        self._written[relpath] = sha
        self._written_stat[relpath] = stat

    def forget(self, relpath: str) -> None:
        """Stop recognising the bytes this process last wrote to `relpath` as its own."""
        self._written.pop(relpath, None)
        self._written_stat.pop(relpath, None)
        self._moved_away.discard(relpath)

    def moved_away(self, relpath: str) -> None:
        """This process moved the file at `relpath` elsewhere: its absence is this process's own doing."""
        self._moved_away.add(relpath)

    def is_moved_away(self, relpath: str) -> bool:
        """Whether `relpath` is missing because this process moved its file (see `moved_away`)."""
        return relpath in self._moved_away

    def is_own_write(self, relpath: str, sha: str) -> bool:
        """Whether these bytes are exactly what this process last wrote to `relpath`."""
        return self._written.get(relpath) == sha

    def is_own_file(self, relpath: str, stat: int | None) -> bool:
        """Whether the file with this stat signature now is, by that alone, the one the worker last wrote."""
        known = self._written_stat.get(relpath)
        return known is not None and known == stat

    def claim(self, relpaths: list[str]) -> None:
        """Mark files the worker process is about to rewrite; `is_claimed` until `release`."""
        self._claimed.update(relpaths)

    def release(self, relpaths: list[str]) -> None:
        """The worker is done with these files."""
        self._claimed.difference_update(relpaths)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def released(self, relpaths: list[str]) -> None:
        """Return once none of `relpaths` is claimed (at once if none is now)."""
        while any(relpath in self._claimed for relpath in relpaths):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def is_claimed(self, relpath: str) -> bool:
        """Whether the worker process is rewriting this file right now."""
        return relpath in self._claimed
