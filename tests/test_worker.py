"""The worker process: git and call recording off the server's event loop, and what happens when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from server import worker as worker_module
from server.worker import Worker, WorkerError, WorkerGone

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
