"""Starting git: at a low priority, and in the idle class while calls are being answered."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from server.gitrun import CALLS_RECENT_SECONDS, NETWORK_NICENESS, GitRunner, idle_class
from server.service import open_service
from server.worker_child import NICENESS
from tests.conftest import MARIA, make_settings


@pytest.mark.anyio
async def test_network_commands_yield_the_cpu_to_answering_calls(tmp_path: Path) -> None:
    runner = GitRunner(tmp_path, "memory-bridge", "memory-bridge@localhost")
    runner.run_sync("init", "-q")
    # An alias that runs `nice` with no arguments prints the niceness git was started with.
    _, out = await runner.run_network("-c", "alias.priority=!nice", "priority")
    assert int(out) == min(19, os.nice(0) + NETWORK_NICENESS)
    assert 0 < NETWORK_NICENESS < NICENESS  # below calls, above the worker's commits


def _priority_alias() -> str:
    """A git alias whose shell prints the scheduling policy and niceness git was started with."""
    probe = "import os; print(os.sched_getscheduler(0), os.nice(0))"
    return f"alias.priority=!{sys.executable} -c '{probe}'"


@pytest.mark.anyio
async def test_while_calls_are_answered_git_runs_in_the_idle_class_and_a_second_later_no_more(
    tmp_path: Path,
) -> None:
    if not idle_class():
        pytest.skip("this machine keeps programs out of the kernel's idle class")
    service = open_service(make_settings(tmp_path / "vault"))
    await service.start(watch=True)  # git runs in the worker process, as in the server
    memory, runner = service.memory, service.memory.git.runner

    async def priority() -> tuple[int, int]:
        _, out = await runner.run("-c", _priority_alias(), "priority")
        policy, niceness = map(int, out.split())
        return policy, niceness

    try:
        before = await priority()
        memory.recorder.note_call(memory.identities.identify(MARIA))
        during = await priority()
        _, out = await runner.run_network("-c", _priority_alias(), "priority")
        network_during = tuple(map(int, out.split()))
        await asyncio.sleep(CALLS_RECENT_SECONDS + 0.3)
        after = await priority()
    finally:
        await service.stop()
    usual, lowest = os.sched_getscheduler(0), min(19, os.nice(0) + NICENESS)
    assert before == after == (usual, lowest)
    assert during == (os.SCHED_IDLE, lowest)  # a call's wake-up takes the CPU from git at once
    assert network_during[0] == os.SCHED_IDLE
