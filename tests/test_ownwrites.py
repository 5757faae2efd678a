"""ownwrites.py: which files hold this process's own writes, and which the worker is rewriting."""

from __future__ import annotations

import asyncio

import pytest

from server.ownwrites import OwnWrites


def test_own_bytes_are_recognised_until_forgotten() -> None:
    own = OwnWrites()
    own.wrote("callers/m.md", "sha1")
    assert own.is_own_write("callers/m.md", "sha1")
    assert not own.is_own_write("callers/m.md", "sha2")
    assert not own.is_own_write("callers/other.md", "sha1")
    own.wrote("callers/m.md", "sha2")  # the latest write is the one that counts
    assert not own.is_own_write("callers/m.md", "sha1") and own.is_own_write("callers/m.md", "sha2")
    own.forget("callers/m.md")
    assert not own.is_own_write("callers/m.md", "sha2")


def test_a_worker_write_is_recognised_by_its_stat_until_the_file_changes() -> None:
    own = OwnWrites()
    own.note("callers/m.md", "sha1", 42)
    assert own.is_own_write("callers/m.md", "sha1")
    assert own.is_own_file("callers/m.md", 42)
    assert not own.is_own_file("callers/m.md", 43)  # changed since, by anyone
    assert not own.is_own_file("callers/m.md", None)  # gone
    assert not own.is_own_file("callers/other.md", 42)
    own.wrote("callers/m.md", "sha2")  # a write of this process's own replaces the worker's
    assert not own.is_own_file("callers/m.md", 42)
    own.note("callers/m.md", "sha3", 44)
    own.forget("callers/m.md")
    assert not own.is_own_file("callers/m.md", 44) and not own.is_own_write("callers/m.md", "sha3")


def test_claims_last_until_released() -> None:
    own = OwnWrites()
    own.claim(["callers/a.md", "callers/b.md"])
    assert own.is_claimed("callers/a.md") and own.is_claimed("callers/b.md")
    own.release(["callers/a.md"])
    assert not own.is_claimed("callers/a.md") and own.is_claimed("callers/b.md")
    own.release(["callers/b.md", "callers/never.md"])
    assert not own.is_claimed("callers/b.md")


@pytest.mark.anyio
async def test_released_returns_once_the_worker_lets_go_of_every_file_asked_about() -> None:
    own = OwnWrites()
    await asyncio.wait_for(own.released(["callers/a.md"]), 1)  # nothing claimed: at once
    own.claim(["callers/a.md", "callers/b.md"])
    waiting = asyncio.create_task(own.released(["callers/a.md", "callers/b.md"]))
    await asyncio.sleep(0.01)
    own.release(["callers/a.md"])
    await asyncio.sleep(0.01)
    assert not waiting.done()  # b is still being rewritten
    own.release(["callers/b.md"])
    await asyncio.wait_for(waiting, 1)
