"""Vault files 0600, folders 0700 (SPEC §15): everything the real server creates in a new vault, and
an existing vault with looser modes tightened once on start, with a log line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from server import filemodes
from tests.conftest import AGENT_NUMBER, MARIA, OTHER, LiveServer, git
from tests.live_helpers import MARIA_KEY, OTHER_KEY, today, wait_until

MARIA_FILE = f"callers/{MARIA_KEY[:12]}.md"
OTHER_FILE = f"callers/{OTHER_KEY[:12]}.md"


def modes(root: Path) -> dict[str, int]:
    """The permission bits of every file and folder under `root` (root itself as "."), by relative path."""
    found = {".": stat.S_IMODE(root.lstat().st_mode)}
    for path in root.rglob("*"):
        found[path.relative_to(root).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return found


def expected_mode(relpath: str, is_dir: bool) -> int:
    """0700 for folders, 0600 for files; git keeps its objects read-only, so theirs is 0400."""
    if is_dir:
        return 0o700
    return 0o400 if relpath.startswith(".git/objects/") else 0o600


def test_every_file_and_folder_the_service_creates_in_a_new_vault_is_its_owners_alone(server_factory) -> None:  # type: ignore[no-untyped-def]
    # Started under a umask that lets everyone read, as a shell usually has it: the service must not keep it.
    previous = os.umask(0o022)
    try:
        server: LiveServer = server_factory()
    finally:
        os.umask(previous)
    call = {"caller_id": MARIA, "called_number": AGENT_NUMBER, "call_sid": "CA1"}
    assert server.personalize(call).status_code == 200
    assert server.admin("POST", f"/api/memory/{MARIA}", json={"fact": "Prefers tea"}).status_code == 200
    assert server.admin("POST", f"/api/memory/{OTHER}", json={"fact": "Calls on Mondays"}).status_code == 200
    assert server.admin("POST", "/api/notes", json={"note": "Closed on Friday"}).status_code == 200
    assert server.admin("DELETE", f"/api/callers/{OTHER}").status_code == 200
    # Wait for the call to be recorded and committed (a stop would do it too, but it also runs now).
    wait_until(lambda: "call_count: 1" in (server.vault / MARIA_FILE).read_text(), what="the recorded call")
    server.stop()  # the index cache and the last commits are written on the way out

    found = modes(server.vault)
    wrong = {
        path: oct(mode) for path, mode in found.items() if mode != expected_mode(path, (server.vault / path).is_dir())
    }
    assert wrong == {}
    # What was checked holds all the kinds of thing the service creates.
    for path in (".", ".git", ".git/objects", "callers", MARIA_FILE, f"notes/{today()}.md", "soul.md", ".git/index"):
        assert path in found, path
    assert OTHER_FILE not in found
    assert ".git/memory-bridge/index-cache.msgpack" in found
    assert any(path.startswith(".git/objects/") and mode == 0o400 for path, mode in found.items())
    # No sample hooks (executables) or other templates: only what git needs.
    assert not (server.vault / ".git" / "hooks").exists()
    assert "Prefers tea" in git(server.vault, "show", f"HEAD:{MARIA_FILE}")


def test_an_existing_vault_with_open_modes_is_tightened_once_on_start(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = server_factory()
    assert first.admin("POST", f"/api/memory/{MARIA}", json={"fact": "Prefers tea"}).status_code == 200
    first.stop()
    vault = first.vault
    # A vault from before this version (no mark in .git), as an editor or `git init` under umask 022 leaves it,
    # with a link that points out of the vault at a file that is not the vault's to change.
    (vault / ".git" / "memory-bridge" / "modes-tightened").unlink()
    outside = tmp_path / "outside.md"
    outside.write_text("not the vault's\n")
    outside.chmod(0o644)
    (vault / "linked.md").symlink_to(outside)
    opened = {"files": 0, "folders": 0}
    for path in [vault, *vault.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod(0o755 if path.is_dir() else (0o444 if "/objects/" in path.as_posix() else 0o644))
        opened["folders" if path.is_dir() else "files"] += 1

    second = server_factory(vault)
    wait_until(lambda: "readable by its owner only" in second.logs(), what="the log line")
    lines = [line for line in second.logs().splitlines() if "readable by its owner only" in line]
    assert len(lines) == 1
    assert f"made {opened['files']} file(s) and {opened['folders']} folder(s) of the vault" in lines[0]
    found = modes(vault)
    wrong = {
        path: oct(mode)
        for path, mode in found.items()
        if path != "linked.md" and mode != expected_mode(path, (vault / path).is_dir())
    }
    assert wrong == {}
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # the link was not followed
    assert opened["files"] > 10 and opened["folders"] > 10
    second.stop()

    # Tightened once: the next start neither walks the vault nor says so again.
    third = server_factory(vault)
    third.stop()
    assert "readable by its owner only" not in third.logs()


def test_tighten_counts_what_it_changed_and_leaves_links_and_the_owners_bits(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    (root / "callers").mkdir(parents=True)
    (root / "callers").chmod(0o755)
    (root / "callers" / "a.md").write_text("a\n")
    (root / "callers" / "a.md").chmod(0o664)
    (root / "callers" / "b.md").write_text("b\n")
    (root / "callers" / "b.md").chmod(0o600)
    (root / "object").write_text("o\n")
    (root / "object").chmod(0o444)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    outside.chmod(0o755)
    (root / "link").symlink_to(outside)
    root.chmod(0o700)

    assert filemodes.tighten(root) == filemodes.Tightened(files=2, folders=1)
    assert modes(root) == {
        ".": 0o700,
        "callers": 0o700,
        "callers/a.md": 0o600,
        "callers/b.md": 0o600,
        "object": 0o400,
        "link": 0o777,
    }
    assert stat.S_IMODE(outside.stat().st_mode) == 0o755
    assert filemodes.tighten(root) == filemodes.Tightened()
