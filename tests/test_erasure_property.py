"""Erasure over random fact text (hypothesis): whatever a caller's facts say, nothing of them is left in any
object of the repository, and every other caller's facts are kept. Real vaults, real git, the service's own
write path and writer, in process."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.service import open_service
from tests.conftest import MARIA, OTHER, make_settings
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
