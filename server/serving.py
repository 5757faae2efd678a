"""How uvicorn serves the app: its flags and the connection limits that keep a flood from starving calls.

`memory-bridge serve` runs with `uvicorn_options`, and so do the tests and the benchmark (they start the
server through `serve`), so all of them run under the same limits.

uvicorn closes a keep-alive connection after `timeout_keep_alive`, but with httptools it has no limit
on how long a request's head may take or how big it may grow: a client that connects and sends
nothing, or trickles a header a byte at a time, holds its connection (a file descriptor) forever.
`GuardedHttpToolsProtocol` adds those limits, and closes connections past the cap at once, so that
idle and slow clients cannot use up the process's file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.config import Settings

KEEP_ALIVE_SECONDS = 5
# A request head (request line and headers) larger than this is refused with 431.
HEAD_MAX_BYTES = 64 * 1024
BACKLOG = 2048
# Connections beyond this are closed as soon as they are accepted (and uvicorn answers 503 past it).
MAX_CONNECTIONS = 4096
# File descriptors kept for the vault's files, git's pipes, the watcher and the worker process.
FD_RESERVE = 256
# The soft file-descriptor limit is raised towards the hard one, up to this.
FD_WANTED = MAX_CONNECTIONS + FD_RESERVE

_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
)


def raise_fd_limit(wanted: int = FD_WANTED) -> int:
    """Raise the soft limit on open files towards `wanted` (never past the hard limit); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep what we have; the connection cap below follows it
    return wanted if soft == resource.RLIM_INFINITY else soft


def connection_limit(fd_limit: int) -> int:
    """How many connections to serve at once with `fd_limit` file descriptors: the rest are refused."""
    return max(64, min(MAX_CONNECTIONS, fd_limit - FD_RESERVE))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap on each request's head.

    Also closes a connection at once when the server already holds `limit_concurrency` of them, so a
    flood never takes the last file descriptors. The deadline costs a request no timer of its own:
    it notes when its head began, and one sweep a second closes the connections whose head is late.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: Any = None,
        *,
        head_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # From the connection (or the first byte of the next request) to the end of its headers
        # (HEAD_TIMEOUT_SECONDS). Real clients send a head in one packet; a slow-header client is cut off.
        self.head_timeout = head_timeout
        self._awaiting_head = False
        self._head_since = 0.0
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection, refuse it if the server is full, and start the head deadline."""
        super().connection_made(transport)
        if self.limit_concurrency is not None and len(self.connections) > self.limit_concurrency:
            transport.close()
            return
        self._await_head()
        _HeadSweeper.ensure(self.server_state, self.loop)

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn does; refuse a head that grew past `HEAD_MAX_BYTES` without ending."""
        super().data_received(data)
        if self._awaiting_head and not self.transport.is_closing():
            # Still no end of head after this chunk: all of it was head. The parser keeps what
            # it has of an unfinished header, so memory grows with it until this cuts it off.
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_MAX_BYTES:
                self.transport.write(_HEAD_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        """A new request on the connection: its head must arrive in time, too."""
        super().on_message_begin()
        self._await_head()

    def on_headers_complete(self) -> None:
        """The head is in: no deadline for it any more (the app decides about the body)."""
        self._awaiting_head = False
        super().on_headers_complete()

    def _await_head(self) -> None:
        if not self._awaiting_head:
            self._awaiting_head = True
            self._head_since = self.loop.time()
            self._head_bytes = 0

    def head_overdue(self, now: float) -> bool:
        """Whether this connection has waited longer than its head timeout for a request head."""
        return self._awaiting_head and now - self._head_since > self.head_timeout


class _HeadSweeper:
    """Once a second, closes the server's connections whose request head is overdue.

    A timer chain rather than a task, so that nothing is left pending when the loop closes; it stops
    when the server holds no connection and starts again with the next one.
    """

    _ATTRIBUTE = "_memory_bridge_head_sweeper"
    INTERVAL_SECONDS = 1.0

    def __init__(self, server_state: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.server_state = server_state
        self.loop = loop
        self.running = False

    @classmethod
    def ensure(cls, server_state: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Start the server's sweeper if it is not running."""
        sweeper = getattr(server_state, cls._ATTRIBUTE, None)
        if sweeper is None:
            sweeper = cls(server_state, loop)
            setattr(server_state, cls._ATTRIBUTE, sweeper)
        if not sweeper.running:
            sweeper.running = True
            loop.call_later(cls.INTERVAL_SECONDS, sweeper.sweep)

    def sweep(self) -> None:
        """Close the overdue connections, and come back in a second while any connection is open."""
        now = self.loop.time()
        for connection in list(self.server_state.connections):
            if isinstance(connection, GuardedHttpToolsProtocol) and connection.head_overdue(now):
                connection.transport.close()  # a no-op on one already closing
        if self.server_state.connections:
            self.loop.call_later(self.INTERVAL_SECONDS, self.sweep)
        else:
            self.running = False


@contextlib.contextmanager
def children_watched_without_threads() -> Iterator[None]:
    """While open, the processes this loop starts (git, the worker) are waited for with pidfds on it.

    Python 3.11's default starts a thread for each child and waits for it to run: with calls
    coming in, that wait held the loop for milliseconds at every fetch and push of a sync. From
    3.12 on, Python does this by itself; where pidfds are missing (Linux before 5.3), the default stays.
    The previous watcher is put back at the end, for whatever loop comes next (tests run many).
    """
    if sys.version_info >= (3, 12) or not hasattr(asyncio, "PidfdChildWatcher"):
        yield
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        previous = asyncio.get_child_watcher()
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(previous)
            watcher.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The options `serve` passes to `uvicorn.run`: one worker and the connection limits above."""
    return {
        "host": settings.host,
        "port": settings.port,
        "workers": 1,
        # asyncio's loop, not uvloop: the worker process is started from here, and so is git while
        # the worker is down; uvloop forks the whole server to start a child (milliseconds with a
        # big index), stalling every call meanwhile, where asyncio's loop uses vfork.
        "loop": "asyncio",
        "http": functools.partial(GuardedHttpToolsProtocol, head_timeout=settings.head_timeout_seconds),
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 20,
        "proxy_headers": True,
        "server_header": False,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "h11_max_incomplete_event_size": HEAD_MAX_BYTES,
        "limit_concurrency": connection_limit(raise_fd_limit()),
        "backlog": BACKLOG,
    }
