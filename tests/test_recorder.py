"""The recorders' turns (SPEC §12): vaults of one process record their calls one batch at a time, spaced."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from server.recorder import Turns


@pytest.mark.anyio
async def test_batches_never_overlap_and_are_spaced_by_the_gap() -> None:
    turns = Turns(0.05)
    spans: list[tuple[float, float]] = []

    async def batch() -> None:
        loop = asyncio.get_running_loop()
        async with turns.turn():
            started = loop.time()
            await asyncio.sleep(0.01)  # the batch's own work, awaiting the worker and git
            spans.append((started, loop.time()))

    await asyncio.gather(*(batch() for _ in range(4)))
    spans.sort()
    assert len(spans) == 4
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started - ended >= 0.05 - 1e-3  # the loop's clock may round a timer a hair early


@pytest.mark.anyio
async def test_batches_after_the_calls_stopped_skip_the_gap() -> None:
    turns = Turns(10.0)  # a gap no test waits out
    async with turns.turn():
        pass
    async with asyncio.timeout(5):
        async with turns.turn(spaced=False):
            pass
