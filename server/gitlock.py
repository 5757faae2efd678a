"""One git writer per vault across processes: the CLI and a running server never commit at once.

Two `flock`s in the vault's `.git/memory-bridge/`: `writer.lock`, held by whichever process is
committing (the server for each group commit, the CLI for its start-up and its writes), and
`server.lock`, held by a running server for its whole life, so that the CLI knows one is there and
leaves the server's uncommitted files to it. The kernel drops both when a process dies, so a crash
never leaves a vault locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

_FOLDER = "memory-bridge"


def _open(vault_root: Path, name: str) -> int:
    folder = vault_root / ".git" / _FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o600)


class WriterLock:
    """The lock every memory-bridge process holds while it runs git's writing commands in a vault."""

    def __init__(self, vault_root: Path) -> None:
        self._root = vault_root
        self._fd: int | None = None
        # Nested holds in this process: the CLI holds the lock for a whole write, and its git
        # writer's commit inside takes it again; in the server, every write in flight holds it.
        self._depth = 0
        # One task at a time takes the lock from free (see `held`).
        self._taking: asyncio.Lock | None = None

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = _open(self._root, "writer.lock")
        return self._fd

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock, waiting for another process's commit to end (start-up and the CLI)."""
        if self._depth == 0:
            fcntl.flock(self._descriptor(), fcntl.LOCK_EX)
        self._depth += 1
        try:
            yield
        finally:
            self._release()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold the lock from the event loop: at once when it is free, else waiting in a thread.

        Tasks of this process share the hold. Taking it from free is one task's job at a time: two
        tasks waiting in threads on the same descriptor could otherwise both count themselves in
        while the first one's release had already dropped the lock.
        """
        if self._taking is None:
            self._taking = asyncio.Lock()
        async with self._taking:
            if self._depth == 0:
                fd = self._descriptor()
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            self._depth += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file (the lock, if held, goes with it)."""
        if self._fd is not None and self._depth == 0:
            os.close(self._fd)
            self._fd = None


class ServerMark:
    """Held by a running server for its whole life; `server_running` asks whether one holds it."""

    def __init__(self, vault_root: Path) -> None:
        self._root = vault_root
        self._fd: int | None = None

    def claim(self) -> None:
        """Mark the vault as served by this process (a second server on it shares the mark)."""
        if self._fd is None:
            self._fd = _open(self._root, "server.lock")
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        """The server is stopping."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def server_running(vault_root: Path) -> bool:
    """Whether a memory-bridge server is serving this vault now."""
    if not (vault_root / ".git").is_dir():
        return False
    fd = _open(vault_root, "server.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
