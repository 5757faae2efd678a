"""Sync through a real git remote (SPEC §11): clone, push, fetch and merge, push events, replicas, people's git.

The remote is a bare repository served by `git daemon` on a loopback port; laptops are plain clones
driven with the git CLI; replicas are real servers on their own folders and ports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import MARIA, LiveServer, base_env, free_port, git
from tests.live_helpers import MARIA_KEY, key_for, wait_until
from tests.remotes import GitDaemon, Laptop, run_git

SYNC_SECRET = "test-sync-webhook-secret"
NUMBERS = [f"+1415555{n:04d}" for n in range(20)]


def start(tmp_path: Path, name: str, url: str, **extra: str) -> LiveServer:
    """A server on its own folder, syncing with `url`."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    vault = folder / "vault"
    env = base_env(vault, **{"GIT_REMOTE": url, "SYNC_SECONDS": "1", "SYNC_WEBHOOK_SECRET": SYNC_SECRET, **extra})
    server = LiveServer(vault=vault, env=env, log_path=folder / "server.log")
    server.start()
    return server


def remote_log(daemon: GitDaemon, name: str = "vault.git") -> str:
    return run_git(daemon.base / name, "log", "--format=%H %s", "main", check=False).stdout


def remote_file(daemon: GitDaemon, relpath: str, name: str = "vault.git") -> str | None:
    shown = run_git(daemon.base / name, "show", f"main:{relpath}", check=False)
    return shown.stdout if shown.returncode == 0 else None


def facts_of(server: LiveServer, number: str) -> list[str]:
    response = server.admin("GET", f"/api/callers/{quote(number)}")
    return response.json()["facts"] if response.status_code == 200 else []


def add_fact(server: LiveServer, number: str, fact: str) -> None:
    response = server.admin("POST", f"/api/memory/{quote(number)}", json={"fact": fact})
    assert response.status_code == 200, response.text


def signed_push(body: bytes, secret: str = SYNC_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


def test_an_empty_remote_receives_the_starter_vault_and_a_new_replica_is_cloned_from_it(
    tmp_path: Path, daemon: GitDaemon
) -> None:
    url = daemon.bare()
    first = start(tmp_path, "a", url)
    try:
        assert wait_until(lambda: remote_file(daemon, "soul.md"), timeout=10, what="the starter vault on the remote")
        add_fact(first, MARIA, "Prefers mornings")
        head = git(first.vault, "rev-parse", "HEAD").strip()
        assert wait_until(lambda: head in remote_log(daemon), timeout=10, what="the fact pushed")
        second = start(tmp_path, "b", url)
        try:
            # Cloned, not started afresh: the same history, and the fact is served at once.
            assert head in git(second.vault, "log", "--format=%H")
            assert facts_of(second, MARIA) == ["Prefers mornings"]
        finally:
            second.stop()
    finally:
        first.stop()


@pytest.mark.parametrize("transport", ["git", "file"])
def test_a_write_on_one_replica_reaches_the_other_within_a_sync_round(
    tmp_path: Path, daemon: GitDaemon, transport: str
) -> None:
    url = daemon.bare()
    if transport == "file":
        url = (daemon.base / "vault.git").as_uri()
    a = start(tmp_path, "a", url)
    b = start(tmp_path, "b", url)
    try:
        add_fact(a, MARIA, "Written on replica A")
        # How fast is the benchmark's figure (§10, BENCHMARKS.md); here a loaded machine gets room.
        wait_until(lambda: facts_of(b, MARIA) == ["Written on replica A"], timeout=15, what="the fact on B")
        add_fact(b, MARIA, "Written on replica B")
        wait_until(lambda: len(facts_of(a, MARIA)) == 2, timeout=15, what="B's fact on A")
        assert sorted(facts_of(a, MARIA)) == sorted(facts_of(b, MARIA))
        health = a.admin("GET", "/health").json()
        assert health["status"] == "ok", health
        assert health["sync"]["last_error"] is None
        assert health["sync"]["branch"] == "main"
    finally:
        a.stop()
        b.stop()


def test_a_signed_push_event_fetches_at_once_and_unsigned_ones_are_refused(tmp_path: Path, daemon: GitDaemon) -> None:
    url = daemon.bare()
    a = start(tmp_path, "a", url)
    b = start(tmp_path, "b", url, SYNC_SECONDS="600")  # only a push event makes B fetch
    try:
        add_fact(a, MARIA, "Pushed from A")
        head = git(a.vault, "rev-parse", "HEAD").strip()
        wait_until(lambda: head in remote_log(daemon), timeout=15, what="A's push")
        time.sleep(1.5)
        assert facts_of(b, MARIA) == [], "B fetched without a push event"
        body = json.dumps({"ref": "refs/heads/main", "after": head}).encode()
        assert b.client.post("/webhook/git", content=body).status_code == 401
        wrong = signed_push(body, "not-the-secret-at-all")
        assert b.client.post("/webhook/git", content=body, headers=wrong).status_code == 401
        assert b.client.post("/webhook/git", content=body, headers={"X-Gitlab-Token": "wrong-token"}).status_code == 401
        response = b.client.post("/webhook/git", content=body, headers=signed_push(body))
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "fetching"}
        wait_until(lambda: facts_of(b, MARIA) == ["Pushed from A"], timeout=15, what="the fact on B")
        # GitLab's way: the token itself.
        add_fact(a, MARIA, "Second push")
        head = git(a.vault, "rev-parse", "HEAD").strip()
        wait_until(lambda: head in remote_log(daemon), timeout=15, what="A's second push")
        assert b.client.post("/webhook/git", content=b"{}", headers={"X-Gitlab-Token": SYNC_SECRET}).status_code == 200
        wait_until(lambda: len(facts_of(b, MARIA)) == 2, timeout=15, what="the second fact on B")
    finally:
        a.stop()
        b.stop()


def test_push_events_are_refused_with_403_while_no_secret_is_set(tmp_path: Path, daemon: GitDaemon) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    server = LiveServer(vault=folder / "vault", env=base_env(folder / "vault"), log_path=folder / "server.log")
    server.start()
    try:
        response = server.client.post("/webhook/git", content=b"{}", headers={"X-Gitlab-Token": SYNC_SECRET})
        assert response.status_code == 403
        assert "SYNC_WEBHOOK_SECRET" in response.json()["detail"]
    finally:
        server.stop()


def test_a_vault_with_a_history_unrelated_to_the_remote_stops_start_up_with_what_to_do(
    tmp_path: Path, daemon: GitDaemon
) -> None:
    url = daemon.bare()
    laptop_dir = tmp_path / "seed"
    laptop_dir.mkdir()
    run_git(laptop_dir, "init", "-q", "-b", "main")
    (laptop_dir / "soul.md").write_text("Another vault\n")
    run_git(laptop_dir, "add", "-A")
    run_git(laptop_dir, "commit", "-q", "-m", "another vault")
    run_git(laptop_dir, "push", "-q", url, "main")
    folder = tmp_path / "own"
    folder.mkdir()
    vault = folder / "vault"
    own = LiveServer(vault=vault, env=base_env(vault), log_path=folder / "first.log")
    own.start()
    own.stop()
    env = {**base_env(vault, GIT_REMOTE=url)}
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", "--env-file", os.devnull, "serve"],
        env={**os.environ, **env, "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "unrelated" in proc.stderr and "GIT_REMOTE" in proc.stderr, proc.stderr


def test_credentials_in_the_remote_url_are_never_shown(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    vault = folder / "vault"
    plain = LiveServer(vault=vault, env=base_env(vault), log_path=folder / "first.log")
    plain.start()
    plain.stop()
    token = "ghp_SeCrEtToKeN0123456789"
    closed_port = free_port()
    url = f"http://memory-bridge:{token}@127.0.0.1:{closed_port}/team/vault.git"
    server = LiveServer(vault=vault, env=base_env(vault, GIT_REMOTE=url, SYNC_SECONDS="0.5"), log_path=folder / "s.log")
    server.start()
    try:
        health = wait_until(
            lambda: (h := server.admin("GET", "/health").json())["sync"]["last_error"] and h,
            timeout=10,
            what="an error",
        )
        assert health["status"] == "degraded"
        assert health["sync"]["remote"] == f"http://***@127.0.0.1:{closed_port}/team/vault.git"
        add_fact(server, MARIA, "Saved while the remote is down")  # writes go on
        text = json.dumps(health) + json.dumps(server.client.get("/health").json())
        doctor = subprocess.run(
            [sys.executable, "-m", "server.cli", "--env-file", "/dev/null", "doctor"],
            env={**os.environ, **server.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        text += doctor.stdout + doctor.stderr
        shown = f"http://***@127.0.0.1:{closed_port}/team/vault.git"
        assert f"cannot reach the remote {shown}" in doctor.stdout, doctor.stdout
    finally:
        server.stop()
    text += server.logs() + git(vault, "log", "--all", "-p", "--format=%H %an %s %b")
    assert token not in text
    assert "memory-bridge:" + token not in text


def test_every_write_acknowledged_while_the_remote_is_down_reaches_it_once_it_is_back(
    tmp_path: Path, daemon: GitDaemon
) -> None:
    url = daemon.bare()
    server = start(tmp_path, "a", url)
    try:
        wait_until(lambda: remote_file(daemon, "soul.md"), timeout=10, what="the first push")
        daemon.stop()
        for n, number in enumerate(NUMBERS):
            add_fact(server, number, f"Fact {n} while the remote is down")
        health = wait_until(
            lambda: (h := server.admin("GET", "/health").json())["sync"]["last_error"] and h,
            timeout=10,
            what="an error",
        )
        assert health["sync"]["ahead"] is None or health["sync"]["ahead"] >= 0
        daemon.start()  # the same port
        head = git(server.vault, "rev-parse", "HEAD").strip()
        wait_until(lambda: head in remote_log(daemon), timeout=15, what="the writes pushed")
        for n, number in enumerate(NUMBERS):
            found = [
                remote_file(daemon, f"callers/{key_for(number)[:12]}.md") or "",
            ]
            assert f"- Fact {n} while the remote is down" in found[0]
        wait_until(lambda: server.admin("GET", "/health").json()["sync"]["last_error"] is None, timeout=5)
    finally:
        server.stop()


def test_a_force_push_that_rewinds_the_remote_loses_no_acknowledged_write(tmp_path: Path, daemon: GitDaemon) -> None:
    url = daemon.bare()
    server = start(tmp_path, "a", url)
    try:
        wait_until(lambda: remote_file(daemon, "soul.md"), timeout=10, what="the first push")
        old = run_git(daemon.base / "vault.git", "rev-parse", "main").stdout.strip()
        for n in range(5):
            add_fact(server, MARIA, f"Fact {n}")
        head = git(server.vault, "rev-parse", "HEAD").strip()
        wait_until(lambda: head in remote_log(daemon), timeout=10, what="the facts pushed")
        # Someone force-pushes the remote back to before the facts.
        laptop = Laptop.clone(url, tmp_path / "laptop")
        laptop.git("reset", "-q", "--hard", old)
        assert laptop.git("push", "-q", "--force", "origin", "HEAD:main").returncode == 0
        wait_until(
            lambda: all(f"- Fact {n}" in (remote_file(daemon, f"callers/{MARIA_KEY[:12]}.md") or "") for n in range(5)),
            timeout=10,
            what="the facts back on the remote",
        )
        assert facts_of(server, MARIA) == [f"Fact {n}" for n in range(5)]
    finally:
        server.stop()


def test_a_reset_in_the_live_vault_is_undone_for_acknowledged_writes(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    vault = folder / "vault"
    server = LiveServer(vault=vault, env=base_env(vault, SYNC_SECONDS="0.5"), log_path=folder / "s.log")
    server.start()
    try:
        add_fact(server, MARIA, "Before")
        before = git(vault, "rev-parse", "HEAD").strip()
        for n in range(3):
            add_fact(server, MARIA, f"Acknowledged {n}")
        acknowledged = git(vault, "rev-parse", "HEAD").strip()
        # A person resets the branch by hand, dropping the three acknowledged commits.
        run_git(vault, "reset", "-q", "--hard", before)
        assert "Acknowledged" not in (vault / f"callers/{MARIA_KEY[:12]}.md").read_text()
        wait_until(
            lambda: server.admin("GET", "/health").json()["restored_acknowledged"] == 1,
            timeout=5,
            what="the facts merged back",
        )
        text = (vault / f"callers/{MARIA_KEY[:12]}.md").read_text()
        assert all(f"- Acknowledged {n}" in text for n in range(3))
        wait_until(
            lambda: facts_of(server, MARIA) == ["Before", "Acknowledged 0", "Acknowledged 1", "Acknowledged 2"],
            timeout=5,
            what="the facts served",
        )
        assert git(vault, "status", "--porcelain") == ""
        # Back in the branch's history (here by a fast-forward: nothing else had happened since).
        assert run_git(vault, "merge-base", "--is-ancestor", acknowledged, "HEAD", check=False).returncode == 0
    finally:
        server.stop()
    assert "merging them back" in server.logs()


def test_a_stopped_remote_never_delays_calls_or_writes(tmp_path: Path, daemon: GitDaemon) -> None:
    url = daemon.bare()
    server = start(tmp_path, "a", url)
    try:
        wait_until(lambda: remote_file(daemon, "soul.md"), timeout=10, what="the first push")
        daemon.proc.send_signal(signal.SIGSTOP)  # a remote that accepts and never answers
        try:
            started = time.monotonic()
            add_fact(server, MARIA, "While the remote hangs")
            call = {"caller_id": NUMBERS[0], "called_number": "+14155550199", "call_sid": "CA1"}
            assert server.personalize(call).status_code == 200
            assert time.monotonic() - started < 2
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
    finally:
        server.stop()
