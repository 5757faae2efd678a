"""Starting git: commands that talk to a remote run at a low priority."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.gitrun import NETWORK_NICENESS, GitError, GitRunner
from server.worker import Worker
from server.worker_child import NICENESS


@pytest.mark.anyio
async def test_network_commands_yield_the_cpu_to_answering_calls(tmp_path: Path) -> None:
    runner = GitRunner(tmp_path, "memory-bridge", "memory-bridge@localhost")
    runner.run_sync("init", "-q")
    # An alias that runs `nice` with no arguments prints the niceness git was started with.
    _, out = await runner.run_network("-c", "alias.priority=!nice", "priority")
    assert int(out) == min(19, os.nice(0) + NETWORK_NICENESS)
    assert 0 < NETWORK_NICENESS < NICENESS  # below calls, above the worker's commits


@pytest.mark.anyio
async def test_a_syncing_server_starts_network_commands_in_their_own_worker(tmp_path: Path) -> None:
    runner = GitRunner(tmp_path, "memory-bridge", "memory-bridge@localhost")
    runner.run_sync("init", "-q")
    runner.network_worker = Worker(NETWORK_NICENESS)
    await runner.network_worker.start()
    try:
        worker = runner.network_worker.pid
        # `$PPID` of the alias's shell is git, whose parent is the process that started it.
        _, out = await runner.run_network("-c", "alias.parent=!cut -d' ' -f4 /proc/$PPID/stat", "parent")
        assert int(out) == worker
        _, out = await runner.run_network("-c", "alias.priority=!nice", "priority")
        assert int(out) == min(19, os.nice(0) + NETWORK_NICENESS)
        # A remote that gives no answer is stopped at the timeout, and the worker serves the next command.
        with pytest.raises(GitError, match="gave no answer within 1 s"):
            await runner.run_network("-c", "alias.hang=!sleep 3", "hang", timeout=1)
        _, out = await runner.run_network("-c", "alias.priority=!nice", "priority")
        assert int(out) == min(19, os.nice(0) + NETWORK_NICENESS)
    finally:
        await runner.network_worker.stop()
