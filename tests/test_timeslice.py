"""The event loop's short time slice (`server.timeslice`): taken by the thread that asks, by no thread
or process started from it, and by the running server's event loop but not its worker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from server.timeslice import SLICE_NANOSECONDS, ask_for_short_slice
from tests.conftest import LiveServer

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or "se.slice" not in Path("/proc/self/sched").read_text(),
    reason="a kernel without per-task time slices (Linux 6.12 and later have them)",
)


def slice_of(task: str) -> int:
    """The time slice, in nanoseconds, of a task (`/proc/<pid>/task/<tid>` or `/proc/thread-self`)."""
    for line in Path(task, "sched").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "se.slice":
            return int(value)
    raise AssertionError(f"no se.slice in {task}/sched")


def test_the_thread_that_asks_gets_the_short_slice_and_nothing_it_starts_does() -> None:
    seen: dict[str, int | bool] = {}

    def asking() -> None:
        seen["taken"] = ask_for_short_slice()
        seen["own"] = slice_of("/proc/thread-self")

        def started() -> None:
            seen["thread"] = slice_of("/proc/thread-self")

        inner = threading.Thread(target=started)
        inner.start()
        inner.join()
        child = subprocess.run(["cat", "/proc/self/sched"], capture_output=True, text=True, check=True).stdout
        seen["child"] = int(next(line for line in child.splitlines() if line.startswith("se.slice")).split(":")[1])

    outer = threading.Thread(target=asking)  # not the test's own thread: the slice stays with the asker
    outer.start()
    outer.join()
    assert seen["taken"] is True
    assert seen["own"] == SLICE_NANOSECONDS
    assert seen["thread"] != SLICE_NANOSECONDS and seen["child"] != SLICE_NANOSECONDS
    assert slice_of("/proc/thread-self") != SLICE_NANOSECONDS


def test_a_thread_started_in_another_class_stays_in_it() -> None:
    seen: dict[int, tuple[bool, int, int | None]] = {}

    def asking(policy: int) -> None:
        os.sched_setscheduler(0, policy, os.sched_param(0))  # as `chrt --idle` or `--batch` would
        taken = ask_for_short_slice()
        fair = policy != os.SCHED_IDLE  # the idle class has no slice to show
        seen[policy] = (
            taken,
            os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK,
            slice_of("/proc/thread-self") if fair else None,
        )

    for policy in (os.SCHED_IDLE, os.SCHED_BATCH):
        thread = threading.Thread(target=asking, args=(policy,))
        thread.start()
        thread.join()
    # The idle class is left alone (the benchmark's stand-ins for other machines run in it); a batch
    # thread keeps its class and gets the short slice.
    assert seen[os.SCHED_IDLE] == (False, os.SCHED_IDLE, None)
    assert seen[os.SCHED_BATCH] == (True, os.SCHED_BATCH, SLICE_NANOSECONDS)


def test_the_servers_event_loop_runs_with_the_short_slice_and_its_worker_does_not(server: LiveServer) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    assert slice_of(f"/proc/{pid}/task/{pid}") == SLICE_NANOSECONDS
    children = [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]
    assert children, "the server's worker process is not running"
    for child in children:
        assert slice_of(f"/proc/{child}/task/{child}") != SLICE_NANOSECONDS
