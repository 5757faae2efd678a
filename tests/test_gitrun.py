"""Starting git: commands that talk to a remote run at a low priority."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.gitrun import NETWORK_NICENESS, GitRunner
from server.worker_child import NICENESS


@pytest.mark.anyio
async def test_network_commands_yield_the_cpu_to_answering_calls(tmp_path: Path) -> None:
    runner = GitRunner(tmp_path, "memory-bridge", "memory-bridge@localhost")
    runner.run_sync("init", "-q")
    # An alias that runs `nice` with no arguments prints the niceness git was started with.
    _, out = await runner.run_network("-c", "alias.priority=!nice", "priority")
    assert int(out) == min(19, os.nice(0) + NETWORK_NICENESS)
    assert 0 < NETWORK_NICENESS < NICENESS  # below calls, above the worker's commits
