"""Erasure over random fact text (hypothesis): whatever a caller's facts say, nothing of them is left in any
object of the repository, and every other caller's facts are kept. Real vaults, real git, the service's own
write path and writer, in process."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.service import open_service
from tests.conftest import MARIA, OTHER, make_settings
from tests.remotes import run_git
from tests.test_erasure import every_object, git_files

letters = st.characters(categories=("L", "N", "P", "Zs"), exclude_characters="\u2028\u2029")
fact_text = (
    st.text(alphabet=letters, min_size=12, max_size=60)
    .map(lambda text: " ".join(text.split()))
    .filter(lambda text: len(text) >= 12)
)


async def _erase(vault: Path, facts: list[str], kept: str) -> None:
    service = open_service(make_settings(vault))
    await service.start(watch=False)
    try:
        memory = service.memory
        maria = memory.identities.write_target(MARIA)
        other = memory.identities.write_target(OTHER)
        assert maria is not None and other is not None
        for fact in facts:
            await memory.add_fact(maria.key, fact, "api", e164=maria.e164)
        await memory.add_fact(other.key, kept, "api", e164=other.e164)
        await service.eraser.erase(maria.key, "cli", block=False)
    finally:
        await service.stop()


@pytest.mark.slow(seconds=10)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=st.lists(fact_text, min_size=1, max_size=3, unique=True), kept=fact_text)
def test_no_fact_of_an_erased_caller_survives_anywhere(facts: list[str], kept: str) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        vault = Path(tmp) / "vault"
        asyncio.run(_erase(vault, facts, kept))
        objects = every_object(vault)
        files = b"".join(git_files(vault).values())
        for fact in facts:
            if fact in kept:
                continue  # the other caller said it too: theirs stays
            assert fact.encode() not in objects
            assert fact.encode() not in files
        assert kept.encode() in objects


@pytest.mark.anyio
async def test_a_fetch_or_push_in_flight_when_a_caller_is_erased_brings_nothing_of_them_back(tmp_path: Path) -> None:
    # The remote still has her history until the rewrite is pushed over it. A fetch that started
    # before the erasure (a slow remote: the one thing stood in for) must not land it after the
    # rewrite, nor may the round's push of the old history, which follows it, point a ref at it again.
    remote = tmp_path / "remote.git"
    run_git(tmp_path, "init", "-q", "--bare", str(remote))
    service = open_service(make_settings(tmp_path / "vault", GIT_REMOTE=remote.as_uri()))
    await service.start(watch=False)  # no sync loop: this test runs its rounds
    memory, sync = service.memory, service.sync
    try:
        maria = memory.identities.write_target(MARIA)
        assert maria is not None
        await memory.add_fact(maria.key, "Keeps a parrot called Zebedee", "api", e164=maria.e164)
        await sync.round(fetch=False)  # her history is on the remote
        assert b"Zebedee" in every_object(remote)

        real = memory.git.runner.run_network
        started, landed, carry_on = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def slow_remote(*args: str, **kwargs: Any) -> tuple[int, str]:
            if "fetch" not in args or started.is_set():
                return await real(*args, **kwargs)
            started.set()
            await asyncio.sleep(0.5)  # the remote takes its time answering
            result = await real(*args, **kwargs)
            landed.set()  # its objects are in the vault; the round goes on once the test has looked
            await carry_on.wait()
            return result

        memory.git.runner.run_network = slow_remote  # type: ignore[method-assign]
        syncing = asyncio.create_task(sync.round(fetch=True))
        await started.wait()
        erasing = asyncio.create_task(service.eraser.erase(maria.key, "api", block=False))
        await landed.wait()
        if erasing.done():  # erased while the fetch was on its way: what it brought must not be her
            assert b"Zebedee" not in every_object(tmp_path / "vault")
        carry_on.set()
        await erasing
        assert b"Zebedee" not in every_object(tmp_path / "vault")
        await syncing
    finally:
        await service.stop()
