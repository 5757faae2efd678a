"""Hostile vault content dropped into a running server's vault: it keeps serving everyone else.

Each problem file is reported on /health, no link is followed out of the vault, and the process
stays within sane memory. One server serves the module; each test drops one file in, and takes it
out again, waiting until /health is back to ok, so that no test sees another's file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import MARIA, OTHER, LiveServer, running_server
from tests.live_helpers import caller_md, key_for
from tests.vault_samples import ALIAS_BOMB

OUTSIDE_NAME = "Outside The Vault"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def known(server: LiveServer, number: str) -> bool:
    answer = server.personalize({"caller_id": number, "called_number": "+14155550199"})
    assert answer.status_code == 200
    return bool(answer.json()["dynamic_variables"]["caller_known"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One running server for the module, on a vault holding Maria's file."""
    with running_server(tmp_path_factory.mktemp("hostile")) as live:
        (live.vault / "callers" / "maria.md").write_text(caller_md(MARIA), encoding="utf-8")
        # Wait for the index (not a call): a call before that would make a new caller with the same key.
        assert live.wait_for(lambda: live.client.get("/health").json()["callers"] == 1)
        assert known(live, MARIA)
        yield live


def _write(data: bytes) -> Callable[[Path, Path], None]:
    return lambda path, _outside: path.write_bytes(data)


def _huge(path: Path, _outside: Path) -> None:
    with open(path, "wb") as fh:  # 50 MB of one line
        fh.write(b"---\nphone_hash: x\n---\n")
        fh.write(b"x" * (50 * 1024 * 1024))


def _link_out(path: Path, outside: Path) -> None:
    secret = outside / "outside.md"
    secret.write_text(caller_md(OTHER, name=OUTSIDE_NAME), encoding="utf-8")
    os.symlink(secret, path)


# What is dropped into callers/, how, and the words /health reports it with.
HOSTILE: dict[str, tuple[str, Callable[[Path, Path], None], str]] = {
    "alias bomb": ("bomb.md", _write(ALIAS_BOMB.format(key=key_for("+14155557001")).encode()), "anchors or aliases"),
    "binary": ("binary.md", _write(bytes(range(256)) * 64), "binary"),
    "no frontmatter": ("no-frontmatter.md", _write(b"# Just a heading\n\nNo properties at all.\n"), "phone_hash"),
    "latin-1": ("latin1.md", _write(caller_md("+14155557002", name="Jos\u00e9").encode("latin-1")), "UTF-8"),
    "duplicate caller": (
        "copy of maria.md",
        _write(caller_md(MARIA, name="Maria Duplicate").encode()),
        "same phone_hash",
    ),
    "50 MB": ("huge.md", _huge, "limit"),
    "link out of the vault": ("link.md", _link_out, "not followed"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_hostile_file_is_reported_and_never_breaks_other_callers(
    server: LiveServer, tmp_path: Path, kind: str
) -> None:
    name, drop, words = HOSTILE[kind]
    relpath = f"callers/{name}"
    path = server.vault / relpath
    before = rss_mb(server.proc.pid)  # type: ignore[union-attr]
    try:
        drop(path, tmp_path)

        def reported() -> dict[str, str] | None:
            errors = server.admin("GET", "/health").json()["errors"]
            return errors if list(errors) == [relpath] else None  # this file, and no other test's

        errors = server.wait_for(reported, timeout=5)
        assert errors, server.admin("GET", "/health").json()
        assert words in errors[relpath]
        assert server.client.get("/health").json()["status"] == "degraded"

        # Everyone else is still served, from the original file; nothing outside the vault leaks in.
        assert known(server, MARIA)
        answer = server.personalize({"caller_id": MARIA, "called_number": "+14155550199"}).json()
        assert answer["dynamic_variables"]["caller_name"] == "Maria Lopez"
        if kind == "link out of the vault":
            assert not known(server, OTHER), "a symlink out of the vault was followed"
            assert OUTSIDE_NAME not in server.logs()
        assert rss_mb(server.proc.pid) < before + 100, "a hostile file blew up the server's memory"  # type: ignore[union-attr]
    finally:
        path.unlink(missing_ok=True)

    # Clearing the problem brings the status back.
    assert server.wait_for(lambda: server.client.get("/health").json()["status"] == "ok", timeout=5)
    assert known(server, MARIA)
