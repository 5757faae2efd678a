"""The worker process: slow, blocking work taken off the server's event loop.

The server answers every call on one event loop, so anything else that loop does is time a call
may wait behind. Two kinds of work are big enough to matter and need nothing from the server's
memory: rewriting caller files to record calls (read, parse, edit, write: a few hundred µs each),
and starting git (forking a process as big as the server blocks its loop for about a millisecond).
A child process, started once next to the server, does both; the server sends it a request and
awaits the answer without blocking.

The protocol is one request at a time over the child's stdin and stdout, each message a 4-byte
length and a msgpack body; `server.worker_child` is the other end. The child holds no state worth
keeping: if it dies, `WorkerGone` tells the caller to do the work in process, and the next request
starts a new child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

import msgspec

from server.worker_child import LENGTH, Ran

log = logging.getLogger("memory_bridge.worker")

_RESTART_PAUSE_SECONDS = 1.0
_STOP_SECONDS = 10.0


class WorkerGone(RuntimeError):
    """The worker process is not running (or died during a request); do the work in process."""


class WorkerError(RuntimeError):
    """The request failed inside the worker process; the message has the exception it raised."""


class Worker:
    """The server's side of the worker process."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._failed_at = 0.0
        self.restarts = 0
        self._encoder = msgspec.msgpack.Encoder()

    @property
    def alive(self) -> bool:
        """Whether the child process is running."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._proc.pid if self.alive and self._proc is not None else None

    async def start(self) -> None:
        """Start the child process (it outlives nothing: it exits when the server closes its stdin)."""
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.worker_child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Its own process group: a Ctrl+C meant for the server must not stop a commit half-way;
            # the child finishes its request and exits when the server closes the pipe.
            process_group=0,
        )

    async def stop(self) -> None:
        """Let the child finish its request and exit."""
        async with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.returncode is not None:
                return
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), _STOP_SECONDS)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def call(self, op: str, *args: Any) -> bytes:
        """Run `op` in the child; returns its msgpack-encoded result. Raises WorkerGone or WorkerError."""
        async with self._lock:
            if not self.alive:
                if time.monotonic() - self._failed_at < _RESTART_PAUSE_SECONDS:
                    raise WorkerGone("the worker process stopped; restarting it shortly")
                await self._restart()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            body = self._encoder.encode((op, args))
            try:
                proc.stdin.write(LENGTH.pack(len(body)) + body)
                await proc.stdin.drain()
                (size,) = LENGTH.unpack(await proc.stdout.readexactly(LENGTH.size))
                status, payload = msgspec.msgpack.decode(await proc.stdout.readexactly(size))
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self._failed_at = time.monotonic()
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise WorkerGone(f"the worker process died: {exc or type(exc).__name__}") from None
            except asyncio.CancelledError:
                # Cancelled between request and reply: the reply would be read as the next request's.
                # The child goes (it may be half-way through a commit, which git's locks make safe);
                # the next request starts a new one.
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                raise
        if status != "ok":
            raise WorkerError(payload)
        return payload  # type: ignore[no-any-return]

    async def _restart(self) -> None:
        if self._proc is not None:
            self.restarts += 1
            log.warning("the worker process had stopped (exit code %s); starting a new one", self._proc.returncode)
        await self.start()

    async def run(self, argv: list[str], env: dict[str, str], stdin: bytes = b"") -> Ran:
        """Run a command in the child with `stdin` as its input, and wait for it (the git writer's commands)."""
        return msgspec.msgpack.decode(await self.call("run", argv, env, stdin), type=Ran)
