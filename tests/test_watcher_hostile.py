"""Hostile vault content dropped into a running server's vault: it keeps serving everyone else.

Each problem file is reported on /health, no link is followed out of the vault, and the process
stays within sane memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import MARIA, OTHER, LiveServer
from tests.live_helpers import caller_md, key_for
from tests.vault_samples import ALIAS_BOMB


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def known(server: LiveServer, number: str) -> bool:
    answer = server.personalize({"caller_id": number, "called_number": "+14155550199"})
    assert answer.status_code == 200
    return bool(answer.json()["dynamic_variables"]["caller_known"])


def test_hostile_files_are_reported_and_never_break_other_callers(server: LiveServer, tmp_path: Path) -> None:
    callers = server.vault / "callers"
    (callers / "maria.md").write_text(caller_md(MARIA), encoding="utf-8")
    # Wait for the index (not a call): a call before that would make a new caller with the same key.
    assert server.wait_for(lambda: server.client.get("/health").json()["callers"] == 1)
    assert known(server, MARIA)
    before = rss_mb(server.proc.pid)  # type: ignore[union-attr]

    secret = tmp_path / "outside.md"
    secret.write_text(caller_md(OTHER, name="Outside The Vault"), encoding="utf-8")
    hostile = {
        "callers/bomb.md": ALIAS_BOMB.format(key=key_for("+14155557001")).encode(),
        "callers/binary.md": bytes(range(256)) * 64,
        "callers/no-frontmatter.md": b"# Just a heading\n\nNo properties at all.\n",
        "callers/latin1.md": caller_md("+14155557002", name="Jos\u00e9").encode("latin-1"),
        "callers/copy of maria.md": caller_md(MARIA, name="Maria Duplicate").encode(),
    }
    for relpath, data in hostile.items():
        (server.vault / relpath).write_bytes(data)
    with open(callers / "huge.md", "wb") as fh:  # 50 MB of one line
        fh.write(b"---\nphone_hash: x\n---\n")
        fh.write(b"x" * (50 * 1024 * 1024))
    os.symlink(secret, callers / "link.md")

    expected = {*hostile, "callers/huge.md", "callers/link.md"}

    def reported() -> dict[str, str] | None:
        errors = server.admin("GET", "/health").json()["errors"]
        return errors if expected <= set(errors) else None

    errors = server.wait_for(reported, timeout=5)
    assert errors, server.admin("GET", "/health").json()
    assert "anchors or aliases" in errors["callers/bomb.md"]
    assert "binary" in errors["callers/binary.md"]
    assert "phone_hash" in errors["callers/no-frontmatter.md"]
    assert "UTF-8" in errors["callers/latin1.md"]
    assert "same phone_hash" in errors["callers/copy of maria.md"]
    assert "limit" in errors["callers/huge.md"]
    assert "not followed" in errors["callers/link.md"]
    assert server.client.get("/health").json()["status"] == "degraded"

    # Everyone else is still served, from the original file; nothing outside the vault leaks in.
    assert known(server, MARIA)
    answer = server.personalize({"caller_id": MARIA, "called_number": "+14155550199"}).json()
    assert answer["dynamic_variables"]["caller_name"] == "Maria Lopez"
    assert not known(server, OTHER), "a symlink out of the vault was followed"
    assert "Outside The Vault" not in server.logs()
    assert rss_mb(server.proc.pid) < before + 100, "a hostile file blew up the server's memory"  # type: ignore[union-attr]

    # Clearing the problems brings the status back.
    for relpath in expected:
        (server.vault / relpath).unlink()
    assert server.wait_for(lambda: server.client.get("/health").json()["status"] == "ok", timeout=5)
    assert known(server, MARIA)
