"""Crashes: the server is SIGKILLed in the middle of a write storm and restarted.

Every write acknowledged before the kill must be present and committed afterwards; leftovers of the
crash (a temporary file, a stale `.git/index.lock`) must neither be served nor stop the writer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, git
from tests.live_helpers import key_for

CALLERS = [f"+1415556{i:04d}" for i in range(20)]


async def storm_until_killed(server, kill_after: int) -> set[str]:  # type: ignore[no-untyped-def]
    """Write facts as fast as possible; SIGKILL the server after `kill_after` acknowledgements."""
    acknowledged: set[str] = set()
    async with httpx.AsyncClient(base_url=server.url, timeout=10, limits=httpx.Limits(max_connections=32)) as client:

        async def writer(w: int) -> None:
            for n in range(10_000):
                marker = f"w{w:02d}n{n:05d}x"
                number = CALLERS[(w + n) % len(CALLERS)]
                try:
                    r = await client.post(
                        f"/api/memory/{key_for(number)}",
                        json={"fact": f"crash {marker}"},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                    )
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code == 200:
                    acknowledged.add(marker)
                if len(acknowledged) >= kill_after and server.proc is not None:
                    os.kill(server.proc.pid, signal.SIGKILL)

        await asyncio.gather(*(writer(w) for w in range(32)))
    return acknowledged


@pytest.mark.slow(seconds=6)
def test_sigkill_mid_storm_loses_no_acknowledged_write(server_factory, vault_dir: Path) -> None:
    server = server_factory(vault_dir)
    for number in CALLERS:
        assert server.admin("POST", f"/api/memory/{number}", json={"fact": "seed"}).status_code == 200

    acknowledged = asyncio.run(storm_until_killed(server, kill_after=300))
    server.proc.wait(timeout=10)
    assert server.proc.returncode == -signal.SIGKILL
    server.proc = None
    server.client.close()
    assert len(acknowledged) >= 300
    # The worker process dies with the server; a git command it had started finishes on its own.
    time.sleep(0.5)

    # What a crash can leave behind: a half-written temporary file and git's lock.
    callers = vault_dir / "callers"
    half = callers / ".0123456789ab.md.dead.mb.tmp"
    half.write_text('---\nphone_hash: "' + "0" * 64 + '"\nname: Half\n---\n## Facts\n- half writ')
    lock = vault_dir / ".git" / "index.lock"
    lock.write_text("")  # fresh, as a git killed a moment ago leaves it

    server.start()
    health = server.client.get("/health").json()
    assert health["status"] == "ok", health
    assert health["callers"] == len(CALLERS)
    assert not half.exists(), "the temporary file was cleaned up"
    assert not lock.exists(), "the stale lock was recovered"
    assert git(vault_dir, "status", "--porcelain") == "", "whatever was on disk is committed"

    files = "\n".join(p.read_text(encoding="utf-8") for p in callers.glob("*.md"))
    committed = git(vault_dir, "log", "-p", "--format=commit %H")
    for marker in acknowledged:
        assert files.count(marker) == 1, f"acknowledged {marker} is missing or duplicated"
        assert f"+- crash {marker}" in committed, f"acknowledged {marker} is not committed"

    # Nothing half-written is served: every caller answers from a parsed file, and writes go on.
    for number in CALLERS:
        answer = server.personalize({"caller_id": number, "called_number": "+14155550199"}).json()
        assert answer["dynamic_variables"]["caller_known"] is True
        assert "half writ" not in answer["dynamic_variables"]["caller_memory"]
    r = server.admin("POST", f"/api/memory/{CALLERS[0]}", json={"fact": "after the crash"})
    assert r.status_code == 200
    assert "after the crash" in git(vault_dir, "log", "-1", "-p")
    git(vault_dir, "fsck", "--strict")  # raises on a damaged repository
