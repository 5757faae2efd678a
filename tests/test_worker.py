"""The worker process: git and call recording off the server's event loop, and what happens when it dies."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time

import msgspec
import pytest

from server import worker as worker_module
from server.worker import Worker, WorkerError, WorkerGone
from server.worker_child import LENGTH, Ran

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


@pytest.mark.anyio
async def test_runs_commands_and_reports_what_failed() -> None:
    worker = Worker()
    await worker.start()
    try:
        ran = await worker.run(["git", "--version"], ENV)
        assert ran.returncode == 0 and ran.stdout.startswith(b"git version")
        ran = await worker.run(["git", "no-such-command"], ENV)
        assert ran.returncode != 0 and b"no-such-command" in ran.stderr
        with pytest.raises(WorkerError, match="FileNotFoundError"):
            await worker.run(["/no/such/program"], ENV)
        # A command's input goes on its stdin (git reads paths and messages there), never the protocol's.
        big = b"callers/c.md\0" * 200_000
        assert (await worker.run(["cat"], ENV, big)).stdout == big
        assert (await worker.run(["cat"], ENV)).stdout == b""
        # A failed request leaves the worker serving.
        assert (await worker.run(["true"], ENV)).returncode == 0
        assert worker.alive and worker.restarts == 0
    finally:
        await worker.stop()
    assert not worker.alive


@pytest.mark.anyio
async def test_a_worker_killed_mid_request_is_reported_then_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker()
    await worker.start()
    first = worker.pid
    assert first is not None
    try:
        asyncio.get_running_loop().call_later(0.2, os.kill, first, signal.SIGKILL)
        with pytest.raises(WorkerGone):
            await worker.run(["sleep", "5"], ENV)
        # Right after a death the caller is told to work in process, rather than wait for a new child.
        with pytest.raises(WorkerGone, match="restarting"):
            await worker.run(["true"], ENV)
        monkeypatch.setattr(worker_module, "_RESTART_PAUSE_SECONDS", 0.0)
        assert (await worker.run(["true"], ENV)).returncode == 0
        assert worker.restarts == 1 and worker.pid not in (None, first)
    finally:
        await worker.stop()


def test_the_child_exits_when_the_server_goes_away() -> None:
    # No server left to answer to (its end of the pipe closed, as when it is killed): the child exits.
    child = subprocess.Popen(
        [sys.executable, "-m", "server.worker_child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=os.getcwd()
    )
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(timeout=10) == 0


def test_the_child_dies_with_a_killed_server() -> None:
    # A server killed outright while its worker is busy (here: a 30 s command) takes the worker with it.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time, msgspec\n"
            "from server.worker_child import LENGTH\n"
            "child = subprocess.Popen([sys.executable, '-m', 'server.worker_child'], stdin=subprocess.PIPE)\n"
            "body = msgspec.msgpack.encode(('run', (['sleep', '30'], {'PATH': '/usr/bin:/bin'})))\n"
            "child.stdin.write(LENGTH.pack(len(body)) + body)\n"
            "child.stdin.flush()\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        cwd=os.getcwd(),
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.3)  # the child has set itself up
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{child}") and "Z" not in _state(child):
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{child}") or "Z" in _state(child), "the worker outlived its server"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_reply_interrupted_by_signals_arrives_whole_when_stdout_is_unbuffered() -> None:
    # The container image sets PYTHONUNBUFFERED, which makes the child's stdout a raw file: a reply
    # bigger than the pipe, written while the server is not reading, is interrupted by a stop and a
    # continue (as a profiler or a debugger attaching does). Every byte must still arrive.
    child = subprocess.Popen(
        [sys.executable, "-m", "server.worker_child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        payload = bytes(range(256)) * 8192  # 2 MiB: many pipefuls
        body = msgspec.msgpack.encode(("run", (["cat"], ENV, payload)))
        child.stdin.write(LENGTH.pack(len(body)) + body)
        child.stdin.flush()
        for _ in range(5):
            time.sleep(0.1)  # the child is blocked writing its reply into the full pipe
            child.send_signal(signal.SIGSTOP)
            child.send_signal(signal.SIGCONT)
        reply = _read_within(child.stdout.fileno(), 10)
        (size,) = LENGTH.unpack(reply[: LENGTH.size])
        assert size == len(reply) - LENGTH.size, "the reply arrived cut short"
        status, ran = msgspec.msgpack.decode(reply[LENGTH.size :])
        assert status == "ok" and msgspec.msgpack.decode(ran, type=Ran).stdout == payload
    finally:
        child.kill()
        child.wait()


def _read_within(fd: int, seconds: float) -> bytes:
    """Everything readable from `fd` until it stays silent for half a second (or `seconds` pass)."""
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if data:
                break
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.anyio
async def test_a_request_cancelled_mid_reply_never_hands_its_reply_to_the_next() -> None:
    worker = Worker()
    await worker.start()
    try:
        slow = asyncio.create_task(worker.run(["sh", "-c", "sleep 0.3; echo first"], ENV))
        await asyncio.sleep(0.1)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # The next request gets its own answer (from a new child), not the cancelled one's.
        deadline = time.monotonic() + 5
        while True:
            try:
                ran = await worker.run(["echo", "second"], ENV)
                break
            except WorkerGone:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert ran.stdout == b"second\n"
    finally:
        await worker.stop()
