"""Erasure (SPEC §14): a caller purged from the files, the index, the cache, every object of history,
`.git/`'s files and the remote (a real bare repository behind `git daemon`); a second replica follows
the rewrite; the do-not-remember list; the content-free commit that records it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import (
    MARIA,
    OTHER,
    LiveServer,
    base_env,
    caught_up,
    elevenlabs_signature,
    fixture_json,
    git,
    run_cli,
)
from tests.live_helpers import MARIA_KEY, OTHER_KEY, caller_md, request, wait_until
from tests.remotes import GitDaemon, Laptop, run_git

NAME = "Marisol Quintanilla"
FACTS = ("Keeps a parrot called Zebedee", "Allergic to walnut shells")
OTHER_FACT = "Other caller keeps bees"


def host_gc(remote: Path) -> None:
    """The git host's own `gc --prune=now`, once the `gc --auto` a push may have started there is done."""
    # receive-pack starts `gc --auto` after a push; a second gc meanwhile stops at once ("already running").
    wait_until(
        lambda: run_git(remote, "gc", "--prune=now", "-q", check=False).returncode == 0,
        timeout=20,
        interval=0.2,
        what="the host's gc",
    )


def start(tmp_path: Path, name: str, url: str | None, **extra: str) -> LiveServer:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    vault = folder / "vault"
    settings = {"SYNC_SECONDS": "1", **extra}
    if url is not None:
        settings["GIT_REMOTE"] = url
    server = LiveServer(vault=vault, env=base_env(vault, **settings), log_path=folder / "server.log")
    server.start()
    return server


def needles(key: str = MARIA_KEY) -> list[bytes]:
    """What must be found nowhere once the caller is erased."""
    return [key.encode(), key[:12].encode(), NAME.encode(), *(fact.encode() for fact in FACTS)]


def every_object(repo: Path) -> bytes:
    """Every object in the repository, reachable or not (`git cat-file --batch-all-objects --batch`)."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"},
    )
    return proc.stdout


def git_files(repo: Path) -> dict[str, bytes]:
    """Every file of `.git/` but the objects (compressed: read through git above), with its bytes."""
    git_dir = repo / ".git" if (repo / ".git").is_dir() else repo
    return {
        str(path.relative_to(git_dir)): path.read_bytes()
        for path in git_dir.rglob("*")
        if path.is_file() and path.relative_to(git_dir).parts[0] != "objects"
    }


def found_in(repo: Path, key: str = MARIA_KEY) -> list[str]:
    """Where a needle still is: 'objects' or the `.git/` file's name."""
    where = []
    objects = every_object(repo)
    where += [f"objects: {needle!r}" for needle in needles(key) if needle in objects]
    for name, data in git_files(repo).items():
        where += [f"{name}: {needle!r}" for needle in needles(key) if needle in data]
    return where


def seed_maria(server: LiveServer) -> None:
    """Maria as a person wrote her (a readable file name), then facts through the API."""
    path = server.vault / "callers" / f"{NAME}.md"
    path.write_text(caller_md(MARIA, name=NAME, facts=FACTS[:1]))
    wait_until(lambda: server.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 200, what="Maria indexed")
    for fact in FACTS[1:]:
        assert server.admin("POST", f"/api/memory/{quote(MARIA)}", json={"fact": fact}).status_code == 200
    assert server.admin("POST", f"/api/memory/{quote(OTHER)}", json={"fact": OTHER_FACT}).status_code == 200
    wait_until(lambda: git(server.vault, "status", "--porcelain") == "", timeout=10, what="the hand edit committed")


def wait_until_pushed(server: LiveServer, daemon: GitDaemon) -> None:
    """Wait until the server's branch is on the remote (its branch may not exist there yet)."""
    head = git(server.vault, "rev-parse", "HEAD").strip()
    remote = daemon.base / "vault.git"
    wait_until(lambda: head in run_git(remote, "log", "--format=%H", "main", check=False).stdout, timeout=15)


def audit_commits(repo: Path) -> list[str]:
    return [sha for sha in run_git(repo, "log", "--format=%H", "--grep=^Erased: ", "main").stdout.split() if sha]


@pytest.mark.slow(seconds=5)
def test_purge_leaves_nothing_of_the_caller_in_objects_git_files_cache_or_the_remote(
    tmp_path: Path, daemon: GitDaemon
) -> None:
    url = daemon.bare()
    server = start(tmp_path, "a", url)
    try:
        seed_maria(server)
        wait_until_pushed(server, daemon)
        assert found_in(server.vault), "the test's needles were never there"

        response = server.admin("DELETE", f"/api/callers/{quote(MARIA)}", params={"purge": "true"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "erased"
        assert response.json()["commits_rewritten"] >= 3

        # The vault's files, the index and the answers.
        assert not (server.vault / "callers" / f"{NAME}.md").exists()
        assert server.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 404
        # Every object, every file of .git/ (the derived cache, reflogs, records), here and on the remote.
        assert found_in(server.vault) == []
        remote = daemon.base / "vault.git"
        audit = git(server.vault, "rev-parse", "HEAD").strip()
        wait_until(lambda: audit in run_git(remote, "rev-parse", "main").stdout, timeout=15, what="the forced push")
        host_gc(remote)  # a host drops unreachable objects with its own gc
        assert found_in(remote) == []
        # One content-free commit records it, with a token that names nobody; the other caller is intact.
        assert audit_commits(remote) == [audit]
        tree = git(server.vault, "rev-parse", f"{audit}^{{tree}}")
        assert tree == git(server.vault, "rev-parse", f"{audit}~1^{{tree}}")
        message = git(server.vault, "log", "-1", "--format=%B", audit)
        assert re.fullmatch(r"erase a caller\n\nErased: [0-9a-f]{64}\nSource: api\n+", message), message
        assert OTHER_FACT in server.admin("GET", f"/api/callers/{quote(OTHER)}").json()["facts"]
        assert OTHER_KEY.encode() in every_object(remote)
        # A late post-call event from before the erasure does not bring the caller back.
        body = json.dumps(fixture_json("post_call_transcription.json")).encode()
        late = server.client.post(
            "/webhook/post-call",
            content=body,
            headers={"ElevenLabs-Signature": elevenlabs_signature(body), "Content-Type": "application/json"},
        )
        assert late.status_code == 200
        wait_until(lambda: caught_up(server), what="the late event handled")
        assert git(server.vault, "rev-parse", "HEAD").strip() == audit
        assert list((server.vault / "callers").glob(f"{MARIA_KEY[:12]}*")) == []
        # A new call is a new caller (without --block): the agent knows nothing of her.
        answer = server.personalize(request(MARIA)).json()
        assert answer["dynamic_variables"]["caller_known"] is False
    finally:
        server.stop()


@pytest.mark.slow(seconds=10)
def test_a_second_replica_follows_the_erasure_and_the_remote_never_gets_it_back(
    tmp_path: Path, daemon: GitDaemon
) -> None:
    url = daemon.bare()
    a = start(tmp_path, "a", url)
    b = start(tmp_path, "b", url)
    try:
        seed_maria(a)
        wait_until(lambda: b.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 200, timeout=20, what="on B")
        assert found_in(b.vault)
        response = a.admin("DELETE", f"/api/callers/{MARIA_KEY}", params={"purge": "true"})
        assert response.status_code == 200, response.text
        audit = git(a.vault, "rev-parse", "HEAD").strip()
        # B fetches the audit commit, rewrites its own history the same way, and merges.
        wait_until(lambda: b.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 404, timeout=20, what="B")
        wait_until(lambda: audit in git(b.vault, "log", "--format=%H"), timeout=20, what="B merges the erasure")
        wait_until(lambda: found_in(b.vault) == [], timeout=20, what="B's old objects pruned")
        assert not any(p.name == f"{NAME}.md" for p in (b.vault / "callers").iterdir())
        # Both go on syncing: a write on B reaches A, and the remote still has nothing of her.
        assert b.admin("POST", f"/api/memory/{quote(OTHER)}", json={"fact": "Written on B after"}).status_code == 200
        wait_until(
            lambda: "Written on B after" in a.admin("GET", f"/api/callers/{quote(OTHER)}").json()["facts"],
            timeout=20,
            what="B's write on A",
        )
        remote = daemon.base / "vault.git"
        host_gc(remote)
        assert found_in(remote) == []
        assert audit_commits(remote) == [audit]
    finally:
        a.stop()
        b.stop()


@pytest.mark.slow(seconds=5)
def test_block_keeps_nothing_of_later_calls_and_leaves_no_key_behind(tmp_path: Path) -> None:
    server = start(tmp_path, "a", None)
    try:
        seed_maria(server)
        response = server.admin("DELETE", f"/api/callers/{quote(MARIA)}", params={"purge": "true", "block": "true"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "blocked"
        head = git(server.vault, "rev-parse", "HEAD").strip()
        # Later calls: the neutral answer, nothing recorded, the tool saves nothing, the API knows nobody.
        answer = server.personalize(request(MARIA)).json()
        assert answer["dynamic_variables"]["caller_known"] is False
        tool = server.client.post(
            "/tools/remember",
            json={"fact": "Call me back", "caller_id": MARIA, "conversation_id": "conv_blocked"},
            headers={"Authorization": "Bearer test-webhook-secret"},
        )
        assert tool.json()["status"] == "not_saved"
        assert server.admin("POST", f"/api/memory/{quote(MARIA)}", json={"fact": "x"}).status_code == 404
        wait_until(lambda: server.client.get("/health").json()["pending_calls"] == 0, what="calls settled")
        assert git(server.vault, "rev-parse", "HEAD").strip() == head
        assert found_in(server.vault) == []
    finally:
        server.stop()
    # The list survives a restart, and still holds no key.
    server.start()
    try:
        assert server.personalize(request(MARIA)).json()["dynamic_variables"]["caller_known"] is False
        wait_until(lambda: server.client.get("/health").json()["pending_calls"] == 0, what="calls settled")
        assert git(server.vault, "rev-parse", "HEAD").strip() == head
    finally:
        server.stop()
    assert found_in(server.vault) == []  # the derived cache saved at the stop included


@pytest.mark.slow(seconds=3)
def test_the_command_line_purges_and_pushes_the_rewrite_with_a_lease(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    remote = tmp_path / "remote.git"
    run_git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    assert run_cli(vault, "init").returncode == 0
    for fact in FACTS:
        assert run_cli(vault, "remember", MARIA, fact).returncode == 0
    assert run_cli(vault, "remember", OTHER, OTHER_FACT).returncode == 0
    run_git(vault, "push", "-q", remote.as_uri(), "HEAD:refs/heads/main")
    assert FACTS[0].encode() in every_object(remote)

    done = run_cli(vault, "forget", MARIA_KEY[:8], "--purge", GIT_REMOTE=remote.as_uri())
    assert done.returncode == 0, done.stderr
    assert "erased from the vault and all of its history" in done.stdout
    assert "the rewritten history is pushed to the remote" in done.stdout
    assert run_git(remote, "rev-parse", "main").stdout == git(vault, "rev-parse", "HEAD")
    host_gc(remote)
    assert found_in(vault) == [] and found_in(remote) == []
    assert OTHER_FACT.encode() in every_object(remote)
    assert run_cli(vault, "history", MARIA).returncode == 1  # nothing left to show
    assert run_cli(vault, "forget", "+44 20 7946 0000").returncode == 1  # unknown: nothing to forget


@pytest.mark.slow(seconds=10)
def test_a_laptop_that_pulls_the_rewrite_into_its_old_clone_does_not_bring_the_caller_back(
    tmp_path: Path, daemon: GitDaemon
) -> None:
    url = daemon.bare()
    server = start(tmp_path, "a", url)
    try:
        seed_maria(server)
        wait_until_pushed(server, daemon)
        remote = daemon.base / "vault.git"
        laptop = Laptop.clone(url, tmp_path / "laptop")
        assert server.admin("DELETE", f"/api/callers/{MARIA_KEY}", params={"purge": "true"}).status_code == 200
        audit = git(server.vault, "rev-parse", "HEAD").strip()
        wait_until(lambda: audit in run_git(remote, "rev-parse", "main").stdout, timeout=15, what="the rewrite")
        # The laptop still has the old history; a pull merges it with the rewrite and pushes both.
        laptop.write("notes/2020-01-01.md", "Typed on the laptop\n")
        laptop.commit_all("a note from the laptop")
        laptop.sync()
        assert FACTS[0].encode() in every_object(remote)
        # The service rewrites what came back, keeps the laptop's note, and replaces the remote's history.
        wait_until(lambda: (server.vault / "notes" / "2020-01-01.md").exists(), timeout=20, what="the note")

        def remote_clean() -> bool:
            host_gc(remote)
            return found_in(remote) == []

        wait_until(remote_clean, timeout=20, interval=0.3, what="the remote rewritten again")
        wait_until(lambda: found_in(server.vault) == [], timeout=20, interval=0.3, what="the vault pruned again")
        assert not any(p.name == f"{NAME}.md" for p in (server.vault / "callers").iterdir())
        assert audit_commits(remote) == [audit]
    finally:
        server.stop()


@pytest.mark.slow(seconds=5)
def test_a_block_from_the_command_line_reaches_a_running_server_at_once(tmp_path: Path) -> None:
    server = start(tmp_path, "a", None)
    try:
        seed_maria(server)
        assert server.personalize(request(MARIA)).json()["dynamic_variables"]["caller_known"] is True
        wait_until(lambda: caught_up(server) and git(server.vault, "status", "--porcelain") == "", timeout=10)
        done = run_cli(server.vault, "forget", MARIA, "--block")
        assert done.returncode == 0, done.stderr
        assert "do-not-remember" in done.stdout
        head = git(server.vault, "rev-parse", "HEAD").strip()
        wait_until(lambda: server.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 404, what="the file gone")
        for _ in range(3):  # the same caller again: the neutral answer each time, nothing recorded
            assert server.personalize(request(MARIA)).json()["dynamic_variables"]["caller_known"] is False
        wait_until(lambda: caught_up(server), what="calls settled")
        assert git(server.vault, "rev-parse", "HEAD").strip() == head
        assert list((server.vault / "callers").glob(f"{MARIA_KEY[:12]}*")) == []
    finally:
        server.stop()
    assert found_in(server.vault) == []
