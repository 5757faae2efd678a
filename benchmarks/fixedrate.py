"""An open-loop, fixed-rate HTTP load generator for latency percentiles (a small wrk2 stand-in).

wrk only runs flat out, and wrk2 (which has a fixed-rate mode) is not packaged in Debian, so this
is the fixed-rate client. It is *open-loop*: request i is due at `start + i / rate` whatever
happened to earlier requests, and its latency is measured from that scheduled time to the last
byte of the answer. A slow answer therefore also charges the requests queued behind it
(no coordinated omission). The latency from the actual send is reported too, and the
*server-side* latency of SPEC §10: from the actual send to the moment the kernel received the
answer's last segment on the client's socket (a software receive timestamp, SO_TIMESTAMPNS), so
that it excludes how late this client process itself woke up to read the answer.

Mechanics: one thread, a pool of keep-alive connections (one request in flight on each), and
`select()` with microsecond timeouts (epoll's are whole milliseconds) after lowering the timer
slack to 1 us, so a request leaves within a few tens of microseconds of its due time. Measured on
loopback from a separate process, these latencies are an upper bound on the server-side ones.

Run: `python -m benchmarks.fixedrate --port 8000 --rate 500 --duration 10 --bodies FILE`
(FILE: one request body per line); prints a JSON summary.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import math
import random
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_TIMERSLACK = 29
# Linux's SO_TIMESTAMPNS (also the ancillary message's type); the socket module does not name it.
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values), max(1, math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def summarize(values_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max of latencies in milliseconds."""
    ordered = sorted(values_ms)
    return {
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "p99.9": percentile(ordered, 99.9),
        "max": ordered[-1] if ordered else float("nan"),
        "n": len(ordered),
    }


@dataclass
class _Conn:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)
    due: float = 0.0
    sent: float = 0.0
    sent_ns: int = 0  # the same moment on the kernel's clock (CLOCK_REALTIME), to compare with `received_ns`
    received_ns: int = 0  # when the kernel received the latest segment (0: no timestamp)
    index: int = 0
    expect: int = -1  # total bytes of the answer once its head is in


def _lower_timer_slack() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def _parse_expect(buf: bytearray) -> int:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return -1
    head = bytes(buf[:end]).lower()
    at = head.find(b"content-length:")
    if at < 0:
        raise RuntimeError(f"answer without Content-Length: {bytes(buf[:200])!r}")
    length = int(head[at + 15 :].split(b"\r\n", 1)[0])
    return end + 4 + length


def _connect(host: str, port: int, connections: int) -> list[_Conn]:
    conns = []
    for _ in range(connections):
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        conns.append(_Conn(sock))
    return conns


def _receive(conn: _Conn) -> bool:
    """Read what the socket has; True once the whole answer is in `conn.buf`."""
    chunk, ancillary, _, _ = conn.sock.recvmsg(262_144, socket.CMSG_SPACE(_TIMESPEC.size))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack(data[: _TIMESPEC.size])
            conn.received_ns = seconds * 1_000_000_000 + nanoseconds
    if not chunk:
        raise RuntimeError("the server closed a connection")
    conn.buf += chunk
    if conn.expect < 0:
        conn.expect = _parse_expect(conn.buf)
    return conn.expect >= 0 and len(conn.buf) >= conn.expect


def run(
    host: str,
    port: int,
    requests: list[bytes],
    rate: float,
    duration: float,
    warmup: float,
    connections: int,
) -> dict[str, object]:
    """Send `rate` requests per second for `warmup + duration` seconds; latencies of the last `duration`."""
    _lower_timer_slack()
    conns = _connect(host, port, connections)
    by_fd = {c.sock.fileno(): c for c in conns}
    idle = collections.deque(conns)
    busy: dict[int, _Conn] = {}
    backlog: collections.deque[tuple[float, int]] = collections.deque()
    interval = 1.0 / rate
    total = int(rate * (warmup + duration))
    first_measured = int(rate * warmup)
    start = time.perf_counter() + 0.05
    scheduled = done = 0
    from_due: list[float] = []
    from_send: list[float] = []
    server_side: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    max_backlog = 0
    max_late = 0.0
    while done < total:
        now = time.perf_counter()
        while scheduled < total and start + scheduled * interval <= now:
            backlog.append((start + scheduled * interval, scheduled))
            scheduled += 1
        max_backlog = max(max_backlog, len(backlog))
        while backlog and idle:
            due, index = backlog.popleft()
            conn = idle.popleft()
            conn.due, conn.index, conn.expect = due, index, -1
            conn.buf.clear()
            conn.received_ns = 0
            conn.sent_ns = time.time_ns()
            conn.sent = time.perf_counter()
            max_late = max(max_late, conn.sent - due) if index >= first_measured else max_late
            conn.sock.sendall(requests[index % len(requests)])
            busy[conn.sock.fileno()] = conn
        timeout = max(0.0, start + scheduled * interval - time.perf_counter()) if scheduled < total else 1.0
        readable, _, _ = select.select(list(busy), [], [], timeout)
        for fd in readable:
            conn = by_fd[fd]
            if not _receive(conn):
                continue
            finished = time.perf_counter()
            del busy[fd]
            idle.append(conn)
            done += 1
            statuses[int(conn.buf[9:12])] += 1
            if conn.index >= first_measured:
                from_due.append((finished - conn.due) * 1000)
                from_send.append((finished - conn.sent) * 1000)
                if conn.received_ns:
                    server_side.append((conn.received_ns - conn.sent_ns) / 1e6)
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.sock.close()
    return {
        "rate": rate,
        "achieved_rate": total / elapsed,
        "duration_s": duration,
        "connections": connections,
        "statuses": {str(k): v for k, v in statuses.items()},
        "latency_ms": summarize(from_due),
        "service_ms": summarize(from_send),
        "server_side_ms": summarize(server_side) if server_side else None,
        "max_send_lateness_ms": max_late * 1000,
        "max_backlog": max_backlog,
    }


def run_closed(host: str, port: int, requests: list[bytes], duration: float, connections: int) -> dict[str, object]:
    """Flat-out, closed-loop load (each connection sends its next request as soon as it has an answer).

    Only a fallback for machines where `wrk` cannot be installed: it measures the same thing, but
    a Python client tops out far below wrk, so its numbers are lower bounds.
    """
    conns = _connect(host, port, connections)
    by_fd = {c.sock.fileno(): c for c in conns}
    rng = random.Random(3)
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()

    def send(conn: _Conn) -> None:
        conn.buf.clear()
        conn.expect = -1
        conn.sent = time.perf_counter()
        conn.sock.sendall(requests[rng.randrange(len(requests))])

    start = time.perf_counter()
    end = start + duration
    for conn in conns:
        send(conn)
    busy = set(by_fd)
    while busy:
        readable, _, _ = select.select(list(busy), [], [], 1.0)
        for fd in readable:
            conn = by_fd[fd]
            if not _receive(conn):
                continue
            now = time.perf_counter()
            latencies.append((now - conn.sent) * 1000)
            statuses[int(conn.buf[9:12])] += 1
            if now < end:
                send(conn)
            else:
                busy.discard(fd)
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.sock.close()
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "statuses": {str(k): v for k, v in statuses.items()},
        "latency_ms": summarize(latencies),
    }


def build_requests(host: str, port: int, path: str, bodies: list[bytes], headers: list[str]) -> list[bytes]:
    """Raw HTTP/1.1 requests, one per body, ready to send."""
    extra = "".join(f"{h}\r\n" for h in headers)
    out = []
    for body in bodies:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        )
        out.append(head.encode() + body)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: run once and print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/webhook/personalize")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--bodies", type=Path, required=True, help="one request body per line")
    parser.add_argument("--header", action="append", default=[], help="extra header, 'Name: value'")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    bodies = [line.encode() for line in args.bodies.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(args.seed).shuffle(bodies)
    requests = build_requests(args.host, args.port, args.path, bodies, args.header)
    result = run(args.host, args.port, requests, args.rate, args.duration, args.warmup, args.connections)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
