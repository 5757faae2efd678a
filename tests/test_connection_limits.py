"""Idle, slow and oversized connections cannot hold the real server's file descriptors.

A thousand connections that send nothing or trickle their headers do not stop a call from being
answered, and the server closes every one of them once its head is overdue; a head that grows
without end is refused; connections past the cap are closed as soon as they are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import selectors
import socket
import sys
import threading
import time

import pytest

from server.serving import HEAD_MAX_BYTES, MAX_CONNECTIONS, children_watched_without_threads
from tests.conftest import MARIA, LiveServer
from tests.live_helpers import request

FLOOD = 1_000
# The head deadline of the flooded server (HEAD_TIMEOUT_SECONDS; 10 s by default): the same sweep
# closes the connections whatever its length, and five seconds leave the flood time to connect and
# the call time to be answered before the first connections are due, on a loaded machine too.
HEAD_TIMEOUT = 5.0
SLOW_HEAD = b"POST /webhook/personalize HTTP/1.1\r\nHost: x\r\nX-Slow: "


def _allow_files(count: int) -> None:
    """Let this test process open `count` sockets (raising its soft limit if the hard one allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"this process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (EOF or reset), without blocking."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 4")


def _open_fds(server: LiveServer) -> int:
    assert server.proc is not None
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


@pytest.mark.slow(seconds=7)
def test_idle_and_slow_header_connections_neither_block_calls_nor_stay_open(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: LiveServer = server_factory(HEAD_TIMEOUT_SECONDS=str(HEAD_TIMEOUT))
    _allow_files(FLOOD + 512)
    fds_before = _open_fds(server)
    connected_at: dict[int, float] = {}
    socks = []
    for _ in range(FLOOD):
        socks.append(_connect(server.port))
        connected_at[socks[-1].fileno()] = time.monotonic()
    slow = socks[FLOOD // 2 :]  # the first half stay idle
    opened = time.monotonic()
    try:
        for sock in slow:
            sock.send(SLOW_HEAD)
        server.wait_for(lambda: _open_fds(server) >= fds_before + FLOOD, timeout=10)
        assert _open_fds(server) >= fds_before + FLOOD, "the server accepted the whole flood"

        # A call is answered at once while the flood holds its connections.
        started = time.monotonic()
        response = server.personalize(request(MARIA))
        assert response.status_code == 200 and response.json()["type"] == "conversation_initiation_client_data"
        assert time.monotonic() - started < 1.0

        # Every flood connection is closed by the server once its head is overdue, however slowly
        # it keeps sending; none is closed before (the server starts counting when it accepts the
        # connection, after `connect` returned here).
        open_socks = {sock.fileno(): sock for sock in socks}
        selector = selectors.DefaultSelector()
        for sock in open_socks.values():
            selector.register(sock, selectors.EVENT_READ)
        early = 0
        deadline = opened + HEAD_TIMEOUT + 5
        while open_socks and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.25):
                sock = open_socks.get(key.fd)
                if sock is not None and _closed_by_server(sock):
                    selector.unregister(sock)
                    del open_socks[key.fd]
                    early += time.monotonic() < connected_at[key.fd] + HEAD_TIMEOUT
            for sock in slow:
                if sock.fileno() in open_socks:
                    with contextlib.suppress(OSError):
                        sock.send(b"a")  # one more byte of a header that never ends
        selector.close()
        assert not open_socks, f"{len(open_socks)} idle connections still open after {HEAD_TIMEOUT + 5} s"
        assert early == 0, f"{early} connections closed before their head was overdue"
        server.wait_for(lambda: _open_fds(server) <= fds_before + 10, timeout=5)
        assert _open_fds(server) <= fds_before + 10, "the server let go of the flood's descriptors"
    finally:
        for sock in socks:
            sock.close()
    assert server.personalize(request(MARIA)).status_code == 200


@pytest.fixture
def server(shared: LiveServer) -> LiveServer:
    """The module's shared server (the flood test runs its own, with a short head deadline)."""
    return shared


def test_a_head_that_never_ends_is_refused_before_it_grows(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        refused = b""
        started = time.monotonic()
        try:
            for _ in range(40):
                sock.sendall(b"a" * (HEAD_MAX_BYTES // 8))
        except OSError:
            pass  # closed by the server while we were still sending
        with contextlib.suppress(OSError):
            refused = sock.recv(4096)
    assert refused.startswith(b"HTTP/1.1 431") or refused == b"", refused[:200]
    assert time.monotonic() - started < 3
    assert server.client.get("/health").status_code == 200


def test_connections_past_the_cap_are_closed_at_once(server: LiveServer) -> None:
    total = MAX_CONNECTIONS + 200
    _allow_files(total + 512)
    socks = []
    try:
        for _ in range(total):
            socks.append(_connect(server.port))
        # Closed at once: within a second of the last connection.
        closed: set[int] = set()

        def refused() -> int:
            closed.update(n for n, sock in enumerate(socks) if n not in closed and _closed_by_server(sock))
            return len(closed)

        server.wait_for(lambda: refused() >= 150, timeout=1.0, interval=0.1)
        assert refused() >= 150, f"only {len(closed)} of the {total - MAX_CONNECTIONS} extra connections were closed"
        assert _open_fds(server) < MAX_CONNECTIONS + 300, "the server kept descriptors for every connection"
    finally:
        for sock in socks:
            sock.close()
    server.wait_for(lambda: server.personalize(request(MARIA)).status_code == 200, timeout=5)


@pytest.mark.anyio
async def test_while_serving_a_child_process_is_waited_for_without_a_thread_of_its_own() -> None:
    # Python 3.11's default watcher starts (and waits for) a thread per child: a stall of the
    # event loop at every git fetch and push. Where pidfds exist, serving waits on them instead.
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        pytest.skip("Python itself waits by pidfd here")
    with children_watched_without_threads():
        before = threading.active_count()
        proc = await asyncio.create_subprocess_exec("sleep", "0.3")
        during = threading.active_count()
        assert await proc.wait() == 0
    assert during == before
