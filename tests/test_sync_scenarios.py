"""The §11 scenarios, each a test: laptops, calls and replicas on one real remote, and nothing lost.

The remote is a bare repository behind `git daemon` on loopback; laptops are plain clones driven with
the git CLI (some with the merge driver installed, some without); replicas are real servers.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from urllib.parse import quote

import httpx

from tests.conftest import ADMIN_KEY, MARIA, LiveServer, git
from tests.live_helpers import MARIA_KEY, key_for, wait_until
from tests.remotes import GitDaemon, Laptop, run_git
from tests.test_sync import add_fact, facts_of, remote_file, start

MARKER = re.compile(r"^(<<<<<<<|=======$|>>>>>>>|\|\|\|\|\|\|\|)", re.MULTILINE)
CALLERS = [f"+1415555{n:04d}" for n in range(20)]


def maria_file(vault: Path) -> Path:
    """Maria's file in a vault, whatever it is named now."""
    found = [p for p in (vault / "callers").glob("*.md") if MARIA_KEY in p.read_text(encoding="utf-8")]
    assert len(found) == 1, found
    return found[0]


def settled(server: LiveServer) -> bool:
    """Nothing pending, nothing uncommitted, nothing unpushed, nothing unmerged as of the last fetch."""
    health = server.admin("GET", "/health").json()
    sync = health["sync"]
    clean = git(server.vault, "status", "--porcelain") == ""
    return bool(
        clean
        and health["pending_writes"] == 0
        and health["pending_calls"] == 0
        and sync["last_error"] is None
        and sync["ahead"] == 0
        and sync["behind"] == 0
    )


def in_step(daemon: GitDaemon, *servers: LiveServer) -> bool:
    """Every server settled, at the remote's tip."""
    tip = run_git(daemon.base / "vault.git", "rev-parse", "main", check=False).stdout.strip()
    heads = {git(server.vault, "rev-parse", "HEAD").strip() for server in servers}
    return heads == {tip} and all(settled(server) for server in servers)


def no_markers_anywhere(*texts: str) -> None:
    for text in texts:
        assert not MARKER.search(text), text[:2000]


async def post_fact(client: httpx.AsyncClient, number: str, fact: str) -> bool:
    """Add a fact through the API of the server `client` talks to; whether it was acknowledged."""
    r = await client.post(
        f"/api/memory/{quote(number)}", json={"fact": fact}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    return r.status_code == 200


def call(server: LiveServer, number: str, sid: str) -> None:
    body = {"caller_id": number, "called_number": "+14155550199", "call_sid": sid}
    assert server.personalize(body).status_code == 200


def test_a_laptop_and_a_call_edit_the_same_caller_at_once_and_both_are_kept(tmp_path: Path, daemon: GitDaemon) -> None:
    url = daemon.bare()
    server = start(tmp_path, "server", url)
    try:
        add_fact(server, MARIA, "Prefers mornings")
        wait_until(lambda: in_step(daemon, server), timeout=10, what="the first fact pushed")
        for driver, laptop_name in ((True, "with-driver"), (False, "without-driver")):
            laptop = Laptop.clone(url, tmp_path / laptop_name, driver=driver)
            relpath = maria_file(laptop.path).relative_to(laptop.path).as_posix()
            text = laptop.read(relpath)
            laptop.write(relpath, text.replace("## Facts\n", f"## Facts\n- Typed on the laptop {laptop_name}\n"))
            laptop.commit_all(f"a fact typed on {laptop_name}")
            # At the same moment, the service takes a fact and a call for the same caller.
            add_fact(server, MARIA, f"Said on the phone while {laptop_name} edited")
            call(server, MARIA, f"CA{laptop_name}")
            laptop.sync()  # pull (merge), then push, as obsidian-git's commit-and-sync does
            wait_until(lambda: in_step(daemon, server), timeout=15, what="the server in step with the remote")
            served = facts_of(server, MARIA)
            assert f"Typed on the laptop {laptop_name}" in served
            assert f"Said on the phone while {laptop_name} edited" in served
            laptop.pull()
            on_laptop = laptop.read(maria_file(laptop.path).relative_to(laptop.path).as_posix())
            assert f"- Typed on the laptop {laptop_name}" in on_laptop
            assert f"- Said on the phone while {laptop_name} edited" in on_laptop
            no_markers_anywhere(on_laptop, maria_file(server.vault).read_text())
        assert len(set(facts_of(server, MARIA))) == len(facts_of(server, MARIA)) == 5
        # A key both sides changed differently (a person on the server's vault, another on a laptop): the
        # remote's value wins, and /health names the file for a person to check.
        laptop = Laptop.clone(url, tmp_path / "linguist", driver=True)
        relpath = maria_file(laptop.path).relative_to(laptop.path).as_posix()
        set_language = lambda text, lang: text.replace("\nname: ", f"\nlanguage: {lang}\nname: ", 1)  # noqa: E731
        laptop.write(relpath, set_language(laptop.read(relpath), "fr"))
        laptop.commit_all("she speaks French")
        # The git host is out of the server's reach while both edits are made, so that the server is
        # the one that merges them (the laptop pushes straight into the repository).
        daemon.stop()
        on_server = server.vault / relpath
        on_server.write_text(set_language(on_server.read_text(), "de"))
        wait_until(lambda: git(server.vault, "status", "--porcelain") == "", timeout=10, what="the hand edit committed")
        laptop.git("push", "-q", (daemon.base / "vault.git").as_uri(), "HEAD:main")
        daemon.start()
        wait_until(lambda: in_step(daemon, server), timeout=15, what="the laptop's change merged")
        assert "\nlanguage: fr\n" in on_server.read_text()
        conflicts = server.admin("GET", "/health").json()["merge_conflicts"]
        assert [(c["path"], c["remote_keys"]) for c in conflicts] == [(relpath, ["language"])], conflicts
    finally:
        server.stop()
    no_markers_anywhere(git(server.vault, "log", "-p", "--all"))


def test_a_laptop_renames_a_caller_file_while_calls_come_in(tmp_path: Path, daemon: GitDaemon) -> None:
    url = daemon.bare()
    server = start(tmp_path, "server", url)
    try:
        add_fact(server, MARIA, "Prefers mornings")
        wait_until(lambda: in_step(daemon, server), timeout=10, what="the first fact pushed")
        count = int(re.search(r"call_count: (\d+)", maria_file(server.vault).read_text()).group(1))  # type: ignore[union-attr]
        laptop = Laptop.clone(url, tmp_path / "laptop", driver=True)
        old = maria_file(laptop.path).relative_to(laptop.path).as_posix()
        laptop.git("mv", old, "callers/Maria Lopez.md")
        laptop.commit_all("name Maria's file")
        for n in range(5):
            call(server, MARIA, f"CA{n}")
        laptop.sync()
        wait_until(lambda: in_step(daemon, server), timeout=20, what="the server in step with the remote")
        files = sorted(p.name for p in (server.vault / "callers").glob("*.md"))
        assert files == ["Maria Lopez.md"], files
        text = (server.vault / "callers" / "Maria Lopez.md").read_text()
        assert f"call_count: {count + 5}\n" in text
        assert "- Prefers mornings" in text
        assert facts_of(server, MARIA) == ["Prefers mornings"]
    finally:
        server.stop()


def test_a_laptop_pushes_a_file_with_conflict_markers(tmp_path: Path, daemon: GitDaemon) -> None:
    url = daemon.bare()
    server = start(tmp_path, "server", url)
    try:
        add_fact(server, MARIA, "Prefers mornings")
        wait_until(lambda: in_step(daemon, server), timeout=10, what="the first fact pushed")
        laptop = Laptop.clone(url, tmp_path / "laptop")
        relpath = maria_file(laptop.path).relative_to(laptop.path).as_posix()
        good = laptop.read(relpath)
        broken = good.replace("## Facts\n", "## Facts\n<<<<<<< HEAD\n- Ours\n=======\n- Theirs\n>>>>>>> origin/main\n")
        laptop.write(relpath, broken)
        laptop.commit_all("a merge gone wrong")
        assert laptop.push().returncode == 0
        health = wait_until(
            lambda: (h := server.admin("GET", "/health").json())["files_with_errors"] and h, timeout=10, what="listed"
        )
        assert health["status"] == "degraded"
        assert any("conflict" in error for error in health["errors"].values()), health["errors"]
        assert facts_of(server, MARIA) == ["Prefers mornings"]  # the last good version serves
        refused = server.admin("POST", f"/api/memory/{quote(MARIA)}", json={"fact": "Not onto markers"})
        assert refused.status_code == 400, refused.text
        # The person fixes it and pushes; it serves again.
        laptop.write(relpath, good.replace("## Facts\n", "## Facts\n- Ours\n- Theirs\n"))
        laptop.commit_all("resolve the merge")
        laptop.sync()
        wait_until(lambda: facts_of(server, MARIA) == ["Ours", "Theirs", "Prefers mornings"], timeout=10)
        wait_until(lambda: server.admin("GET", "/health").json()["files_with_errors"] == 0, timeout=5)
    finally:
        server.stop()
    # The service's own commits never carry markers (the person's commit does, and is history).
    for sha in git(server.vault, "log", "--format=%H", "--grep=Source: ").split():
        no_markers_anywhere(git(server.vault, "show", "--format=", sha))


def test_the_remote_goes_away_during_a_write_storm_and_every_acknowledged_write_reaches_it(
    tmp_path: Path, daemon: GitDaemon
) -> None:
    url = daemon.bare()
    server = start(tmp_path, "server", url)
    acknowledged: list[tuple[str, str]] = []
    try:
        wait_until(lambda: remote_file(daemon, "soul.md"), timeout=10, what="the first push")

        async def storm() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

                async def one(n: int) -> None:
                    number = CALLERS[n % len(CALLERS)]
                    if await post_fact(client, number, f"Storm fact {n:04d}"):
                        acknowledged.append((number, f"Storm fact {n:04d}"))

                async def outage() -> None:
                    # The remote goes away a moment into the storm and comes back after a few seconds
                    # (the issue says a minute; what matters is that pushes fail for several rounds).
                    await asyncio.sleep(0.5)
                    daemon.stop()
                    await asyncio.sleep(4)
                    daemon.start()

                writes = [one(n) for n in range(300)]
                await asyncio.gather(outage(), *writes)

        asyncio.run(storm())
        assert len(acknowledged) == 300
        wait_until(lambda: in_step(daemon, server), timeout=30, what="everything pushed once the remote is back")
        for number, fact in acknowledged:
            text = remote_file(daemon, f"callers/{key_for(number)[:12]}.md") or ""
            assert text.count(f"- {fact}\n") == 1, (number, fact)
    finally:
        server.stop()


def test_two_replicas_take_500_writes_to_the_same_20_callers_at_once(tmp_path: Path, daemon: GitDaemon) -> None:
    url = daemon.bare()
    a = start(tmp_path, "a", url)
    b = start(tmp_path, "b", url)
    acknowledged: list[tuple[str, str]] = []
    try:
        wait_until(lambda: in_step(daemon, a, b), timeout=10, what="both replicas in step")

        async def storm() -> None:
            async with (
                httpx.AsyncClient(base_url=a.url, timeout=60) as on_a,
                httpx.AsyncClient(base_url=b.url, timeout=60) as on_b,
            ):

                async def one(n: int) -> None:
                    number = CALLERS[n % len(CALLERS)]
                    client = on_a if (n // len(CALLERS)) % 2 else on_b  # every caller on both replicas
                    if await post_fact(client, number, f"Replica fact {n:04d}"):
                        acknowledged.append((number, f"Replica fact {n:04d}"))

                await asyncio.gather(*(one(n) for n in range(500)))

        asyncio.run(storm())
        assert len(acknowledged) == 500
        wait_until(lambda: in_step(daemon, a, b), timeout=60, what="both replicas in step with the remote")
        assert git(a.vault, "rev-parse", "HEAD") == git(b.vault, "rev-parse", "HEAD")
        for number in CALLERS:
            relpath = f"callers/{key_for(number)[:12]}.md"
            texts = {
                "a": (a.vault / relpath).read_text(),
                "b": (b.vault / relpath).read_text(),
                "remote": remote_file(daemon, relpath) or "",
            }
            mine = [fact for who, fact in acknowledged if who == number]
            for where, text in texts.items():
                no_markers_anywhere(text)
                for fact in mine:
                    assert text.count(f"- {fact}\n") == 1, (where, number, fact)
            assert sorted(facts_of(a, number)) == sorted(mine) == sorted(facts_of(b, number))
    finally:
        a.stop()
        b.stop()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_sigkill_of_a_replica_in_the_middle_of_a_merge_then_restart(tmp_path: Path, daemon: GitDaemon) -> None:
    url = daemon.bare()
    server = start(tmp_path, "server", url, SYNC_SECONDS="600")
    laptop_dir = tmp_path / "laptop"
    try:
        add_fact(server, MARIA, "Prefers mornings")
        wait_until(lambda: in_step(daemon, server), timeout=10, what="the first fact pushed")
        # The next merge of Maria's file hangs in its driver, as a slow disk or a big file might.
        started = tmp_path / "driver-started"
        hang = tmp_path / "hang.sh"
        hang.write_text(f"#!/bin/sh\ntouch {started}\nsleep 60\n")
        hang.chmod(0o755)
        git(server.vault, "config", "merge.memory-bridge.driver", f"{hang} %O %A %B %P")
        laptop = Laptop.clone(url, laptop_dir, driver=True)
        relpath = maria_file(laptop.path).relative_to(laptop.path).as_posix()
        laptop.write(relpath, laptop.read(relpath).replace("## Facts\n", "## Facts\n- From the laptop\n"))
        laptop.commit_all("a fact from the laptop")
        assert laptop.push().returncode == 0
        add_fact(server, MARIA, "Acknowledged before the crash")
        assert server.proc is not None
        pid = server.proc.pid
        workers = _children(pid)
        server.client.post("/webhook/git", content=b"{}", headers={"X-Gitlab-Token": "test-sync-webhook-secret"})
        wait_until(started.exists, timeout=10, what="the merge in its driver")
        for worker in workers:
            os.killpg(worker, signal.SIGKILL)  # the worker, the git it started and the driver
        os.kill(pid, signal.SIGKILL)
        server.proc.wait()
        server.proc = None
        assert (server.vault / ".git" / "memory-bridge" / "merging").exists(), "the kill did not land mid-merge"
    finally:
        server.stop()
    restarted = LiveServer(vault=server.vault, env=server.env, log_path=tmp_path / "restarted.log")
    restarted.start()
    try:
        wait_until(lambda: in_step(daemon, restarted), timeout=20, what="the restarted replica in step")
        assert not (restarted.vault / ".git" / "MERGE_HEAD").exists()
        facts = facts_of(restarted, MARIA)
        assert sorted(facts) == sorted(["Prefers mornings", "Acknowledged before the crash", "From the laptop"])
        no_markers_anywhere(maria_file(restarted.vault).read_text())
        assert "a merge was interrupted when the service stopped" in restarted.logs()
    finally:
        restarted.stop()
