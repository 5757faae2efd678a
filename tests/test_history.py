"""A caller's history across renames, undo through the one git writer, and commit subjects that name
callers as people read them (SPEC §14); the CLI run as a subprocess on real vaults."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import MARIA, LiveServer, git, run_cli
from tests.live_helpers import MARIA_KEY, caller_md, wait_until
from tests.remotes import run_git


def section(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"## {name}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return [line for line in lines[start:end] if line.strip()]


def ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow(seconds=6)
def test_history_follows_a_caller_across_a_rename_and_undo_reverts_one_change(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    ok(run_cli(vault, "init"))  # no command but init and serve makes a vault (SPEC §14)
    ok(run_cli(vault, "remember", MARIA, "Prefers mornings"))
    # A person renames the file and commits it with their own git.
    (vault / "callers" / f"{MARIA_KEY[:12]}.md").rename(vault / "callers" / "Maria Lopez.md")
    run_git(vault, "add", "-A")
    run_git(vault, "commit", "-q", "-m", "rename Maria's file")
    ok(run_cli(vault, "remember", MARIA, "Has a dog named Rex"))
    ok(run_cli(vault, "remember", MARIA, "Lives in Leeds"))
    ok(run_cli(vault, "note", "Unrelated daily note"))

    shown = ok(run_cli(vault, "history", MARIA_KEY[:8])).splitlines()
    subjects = [line.split("  ", 3)[3].strip() for line in shown]
    assert len(shown) == 4, shown
    assert subjects[0].startswith(f"fact for {MARIA_KEY[:12]}")
    assert subjects[2].startswith("rename Maria's file")
    assert "callers/Maria Lopez.md" in shown[0] and f"callers/{MARIA_KEY[:12]}.md" in shown[3]
    assert ok(run_cli(vault, "history", MARIA)) == "\n".join(shown) + "\n"  # by number too

    # Undo the middle fact, changed after by another: the later fact stays; a new commit says what it undid.
    middle = shown[1].split()[0]
    ok(run_cli(vault, "undo", middle))
    text = (vault / "callers" / "Maria Lopez.md").read_text()
    assert section(text, "Facts") == ["- Prefers mornings", "- Lives in Leeds"]
    subject = git(vault, "log", "-1", "--format=%s%n%b")
    assert subject.startswith(f"undo {middle}: fact for {MARIA_KEY[:12]}") and "Source: cli" in subject
    ok(run_cli(vault, "undo", shown[0].split()[0]))
    assert section((vault / "callers" / "Maria Lopez.md").read_text(), "Facts") == ["- Prefers mornings"]
    assert git(vault, "status", "--porcelain") == ""

    # A revert that would conflict (the file was renamed since), and a merge commit, are refused with words.
    head = git(vault, "rev-parse", "HEAD")
    refused = run_cli(vault, "undo", shown[3].split()[0])
    assert refused.returncode == 1 and "would conflict" in refused.stderr
    assert git(vault, "rev-parse", "HEAD") == head
    run_git(vault, "checkout", "-q", "-b", "side", head.strip())
    run_git(vault, "commit", "-q", "--allow-empty", "-m", "side")
    run_git(vault, "checkout", "-q", "main")
    run_git(vault, "merge", "-q", "--no-ff", "--no-edit", "side")
    merged = run_cli(vault, "undo", "HEAD")
    assert merged.returncode == 1 and "merge commit" in merged.stderr
    assert run_cli(vault, "undo", "nosuchcommit").returncode == 1


def test_commit_subjects_name_the_caller_and_tool_facts_keep_their_conversation(server: LiveServer) -> None:
    (server.vault / "callers" / "Maria Lopez.md").write_text(caller_md(MARIA))
    wait_until(lambda: server.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 200, what="indexed")
    assert server.admin("POST", f"/api/memory/{quote(MARIA)}", json={"fact": "Likes tea"}).status_code == 200
    assert git(server.vault, "log", "-1", "--format=%s") == f"fact for Maria Lopez ({MARIA_KEY[:12]})\n"
    tool = server.client.post(
        "/tools/remember",
        json={"fact": "Wants a callback", "caller_id": MARIA, "conversation_id": "conv_0123abc"},
        headers={"Authorization": "Bearer test-webhook-secret"},
    )
    assert tool.json()["status"] == "saved"
    log = git(server.vault, "log", "-1", "--format=%s%n%b")
    assert log.startswith(f"fact for Maria Lopez ({MARIA_KEY[:12]}) in conv_0123abc\n")
    assert "Source: tool" in log
    everything = git(server.vault, "log", "--format=%B")
    assert MARIA.lstrip("+") not in everything


def test_a_hand_edit_that_arrives_through_sync_keeps_its_author(tmp_path: Path, daemon) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import base_env
    from tests.remotes import Laptop

    url = daemon.bare()
    folder = tmp_path / "a"
    folder.mkdir()
    server = LiveServer(
        vault=folder / "vault",
        env=base_env(folder / "vault", GIT_REMOTE=url, SYNC_SECONDS="0.5"),
        log_path=folder / "server.log",
    )
    server.start()
    try:
        wait_until(lambda: run_git(daemon.base / "vault.git", "rev-parse", "main", check=False).returncode == 0)
        laptop = Laptop.clone(url, tmp_path / "laptop")
        laptop.write("callers/Maria Lopez.md", caller_md(MARIA))
        laptop.commit_all("Maria's file, typed on a laptop")
        laptop.sync()
        sha = laptop.git("rev-parse", "HEAD").stdout.strip()
        wait_until(lambda: server.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 200, timeout=15)
        assert git(server.vault, "log", "-1", "--format=%an <%ae>|%s", sha) == (
            "Laptop Person <person@example.com>|Maria's file, typed on a laptop\n"
        )
        assert sha in git(server.vault, "log", "--format=%H")
        history = run_cli(server.vault, "history", MARIA).stdout
        assert "Laptop Person" in history and "typed on a laptop" in history
    finally:
        server.stop()


def test_a_subject_shows_a_name_but_never_anything_like_a_number() -> None:
    from server.gitcommit import caller_label

    key = MARIA_KEY
    assert caller_label("Maria  Lopez\n", key) == f"Maria Lopez ({key[:12]})"
    assert caller_label("", key) == caller_label(None, key) == key[:12]
    for name in ("Call 415 555 0123", "+1 (415) 555-0123", "maria 4155550123"):
        assert caller_label(name, key) == key[:12]
    assert len(caller_label("x" * 500, key)) == 60 + len(f" ({key[:12]})")
