"""Failures are loud and calls are still answered: a disk that refuses writes, a person deleting a file mid-write.

Everything here is the real server under uvicorn, with its real vault, git and watcher.

How the disk is made to fail: the kernel's file-size limit (RLIMIT_FSIZE) of the running server and
its worker process is lowered to 0 with prlimit(2), so every write of a byte to any file is refused
with EFBIG ("File too large"), exactly where a full or read-only disk refuses it, and every line of
the service's code above the system call runs as in production. A tmpfs or loop mount would be
closer to a full disk, but needs CAP_SYS_ADMIN, which a CI container does not have; prlimit on
one's own processes needs no privilege at all, and no test-only hook is built into the service.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import ADMIN_KEY, MARIA, WEBHOOK_SECRET, LiveServer, elevenlabs_signature, fixture_json, git
from tests.live_helpers import MARIA_KEY, caller_md, frontmatter, known_file, request, source_of, wait_until


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the server and its worker process, and any git they run)."""
    found = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += _process_tree(int(child))
    return found


@contextmanager
def disk_refusing_writes(server: LiveServer) -> Iterator[None]:
    """Every write to a file by the server and its worker fails, as on a full disk, for the block."""
    assert server.proc is not None
    pids = _process_tree(server.proc.pid)
    assert len(pids) >= 2, "the server's worker process is not running"
    previous = {pid: resource.prlimit(pid, resource.RLIMIT_FSIZE) for pid in pids}
    for pid, (_, hard) in previous.items():
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        for pid, limits in previous.items():
            with suppress(ProcessLookupError):  # a git the worker ran has exited
                resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)


def _temp_files(vault: Path) -> list[Path]:
    leftovers = [p for p in vault.rglob("*.tmp") if ".git" not in p.relative_to(vault).parts]
    stage = vault / ".git" / "memory-bridge" / "stage"
    return leftovers + (list(stage.iterdir()) if stage.is_dir() else [])


def _post_call(server: LiveServer, conversation_id: str) -> httpx.Response:
    event = fixture_json("post_call_transcription.json")
    event["event_timestamp"] = int(time.time())
    event["data"]["conversation_id"] = conversation_id
    event["data"]["metadata"]["phone_call"]["external_number"] = MARIA
    event["data"]["analysis"]["transcript_summary"] = "Asked about opening hours."
    event["data"]["analysis"]["data_collection_results"] = {}
    body = json.dumps(event).encode()
    headers = {"ElevenLabs-Signature": elevenlabs_signature(body), "Content-Type": "application/json"}
    return server.client.post("/webhook/post-call", content=body, headers=headers)


def _remember(server: LiveServer, fact: str) -> httpx.Response:
    body = {"fact": fact, "caller_id": MARIA, "called_number": "+14155550199", "conversation_id": "conv_disk1"}
    return server.client.post("/tools/remember", json=body, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})


@pytest.mark.slow(seconds=4)
def test_a_disk_refusing_writes_is_loud_keeps_calls_and_recovers(server: LiveServer) -> None:
    vault = server.vault
    assert server.admin("POST", f"/api/memory/{quote(MARIA)}", json={"fact": "Likes tea"}).status_code == 200
    relpath = wait_until(lambda: known_file(server, MARIA), what="Maria's file")
    calls_before = frontmatter(vault / relpath)["call_count"]

    with disk_refusing_writes(server):
        api = server.admin("POST", f"/api/memory/{MARIA_KEY}", json={"fact": "Has a cat"})
        assert api.status_code == 503, api.text
        assert api.headers["content-type"].startswith("application/json")
        assert api.json() == {
            "status_code": 503,
            "detail": "not saved: the vault's disk refused the write (see /health); retry later",
        }
        tool = _remember(server, "Has a parrot")
        assert tool.status_code == 200
        assert tool.json() == {
            "status": "not_saved",
            "message": "I couldn't save that just now because of a problem on our side. Sorry.",
        }
        # Not even the inbox can hold it: refused, so that ElevenLabs may deliver it again.
        refused = _post_call(server, "conv_disk_full_1")
        assert refused.status_code == 503, refused.text
        assert refused.json()["detail"] == "not held: the vault's disk refused the event; retry later"
        # Calls are still answered, and counted later.
        for _ in range(3):
            answer = server.personalize(request(MARIA))
            assert answer.status_code == 200
            assert answer.json()["dynamic_variables"]["caller_known"] is True
        health = server.admin("GET", "/health").json()
        assert health["status"] == "degraded"
        assert health["disk_error"] == "cannot write to the vault: File too large"
        # The recorder tries, is refused, and keeps the calls (tried again every second).
        time.sleep(2.5)
        assert server.client.get("/health").json()["pending_calls"] == 3
        assert _temp_files(vault) == []
        assert "Has a cat" not in (vault / relpath).read_text()

    # The disk takes writes again: the calls are counted, /health is ok, writes are saved.
    wait_until(lambda: server.client.get("/health").json()["pending_calls"] == 0, timeout=10, what="calls recorded")
    assert frontmatter(vault / relpath)["call_count"] == calls_before + 3
    assert "call from" in git(vault, "log", "-1", "--format=%B", "--", relpath)
    health = wait_until(lambda: (h := server.admin("GET", "/health").json())["status"] == "ok" and h, what="health ok")
    assert health["disk_error"] is None
    assert server.admin("POST", f"/api/memory/{MARIA_KEY}", json={"fact": "Has a cat"}).status_code == 200
    assert _remember(server, "Has a parrot").json()["status"] == "saved"
    assert _post_call(server, "conv_disk_full_1").json()["status"] == "held"
    wait_until(lambda: server.client.get("/health").json()["inbox_held"] == 0, what="the held event applied")
    assert _temp_files(vault) == []
    history = git(vault, "log", "-p", "--", relpath)
    assert "+- Has a cat" in history and "+- Has a parrot" in history and "conv_disk_full_1" in history


# -- a person deleting the file while the service writes to it --------------------------------------


def _commits_with_diffs(vault: Path, relpath: str) -> list[tuple[str, str]]:
    """(message, patch) of every commit touching `relpath`, oldest first."""
    out = git(vault, "log", "--reverse", "-p", "--format=%x1e%B%x1f", "--", relpath)
    result = []
    for chunk in out.split("\x1e")[1:]:
        message, _, patch = chunk.partition("\x1f")
        result.append((message.strip(), patch))
    return result


# Sixteen writers at once, ten writes each, while the person deletes the file (and now and then puts a
# hand-written one back) for the whole storm. The writes to the one file go one at a time, each racing
# the person; 400 of them made the same races, for two and a half times as long.
WRITERS = 16
STORM_WRITES = 160


@pytest.mark.slow(seconds=10)
def test_hand_deletions_during_a_write_storm_lose_no_acknowledged_fact(server: LiveServer) -> None:
    vault = server.vault
    assert server.admin("POST", f"/api/memory/{quote(MARIA)}", json={"fact": "Fact 0000"}).status_code == 200
    relpath = wait_until(lambda: known_file(server, MARIA), what="Maria's file")
    path = vault / relpath
    done = threading.Event()
    deletions = 0

    def person() -> None:
        # Deletes the file again and again; now and then puts a hand-written version back.
        nonlocal deletions
        rng = random.Random(7)
        while not done.is_set():
            try:
                path.unlink()
                deletions += 1
            except FileNotFoundError:
                pass
            time.sleep(rng.uniform(0.0, 0.03))
            if rng.random() < 0.3:
                # Nameless, as the service's file is: a name would give the file a new one (SPEC §14).
                path.write_text(caller_md(MARIA, name="", facts=("Written by hand",), calls=()), encoding="utf-8")
            time.sleep(rng.uniform(0.0, 0.03))

    acknowledged: list[str] = []

    def write(n: int) -> None:
        fact = f"Fact {n:04d}"
        with httpx.Client(base_url=server.url, timeout=30) as client:
            response = client.post(
                f"/api/memory/{quote(MARIA)}", json={"fact": fact}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
        if response.status_code == 200:
            acknowledged.append(fact)
        else:
            assert response.status_code in (400, 503), response.text  # refused, never a 5xx crash

    deleter = threading.Thread(target=person)
    deleter.start()
    try:
        with ThreadPoolExecutor(WRITERS) as pool:
            list(pool.map(write, range(1, STORM_WRITES + 1)))
    finally:
        done.set()
        deleter.join()
    assert deletions > 20
    assert len(acknowledged) >= STORM_WRITES // 2
    server.stop()  # commits the last hand edits

    commits = _commits_with_diffs(vault, relpath)
    added: set[str] = set()
    for message, patch in commits:
        source = source_of(message)
        lines = patch.splitlines()
        if source == "api":
            # The API's commits hold the API's change alone: no line removed, no file deleted.
            assert "deleted file mode" not in patch, message
            removed = [line for line in lines if line.startswith("-") and not line.startswith("---")]
            assert removed == [], (message, removed)
            added.update(m.group(1) for line in lines if (m := re.fullmatch(r"\+- (Fact \d{4})", line)))
    missing = sorted(set(acknowledged) - added)
    assert missing == [], f"{len(missing)} acknowledged fact(s) not committed by the API: {missing[:10]}"
    # Every deletion that reached git did so in a person's commit.
    for message, patch in commits:
        if "deleted file mode" in patch:
            assert source_of(message) == "hand-edit", message
