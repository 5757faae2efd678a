"""The post-call inbox (SPEC §13): held durably before the 200, applied in order, parked while a
caller file is broken and applied after the fix, SIGKILL-proof; `memory-bridge inbox`; /health's counts.

Real server under uvicorn, real vault, real git, real watcher; the events are ElevenLabs' fixture,
signed as ElevenLabs signs.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

from server.inbox import _HEADER, _MAGIC, MAX_SLOT_FILES, SLOT_BYTES, HeldCall, Inbox
from tests.calls import Call, encode
from tests.conftest import LiveServer, caught_up, elevenlabs_signature, git, run_cli
from tests.live_helpers import key_for

BASE_TIME = 1764457163  # 2025-11-29 22:59:23 UTC


def event(call: Call, n: int, tag: str = "inbox") -> bytes:
    """The fixture's transcription as conversation `n` of this caller, with a summary of its own."""
    return encode(
        call.payload(
            {
                "data.conversation_id": f"conv_{tag}_{n:05d}",
                "data.analysis.transcript_summary": f"Inbox call {n}.",
                "data.metadata.start_time_unix_secs": BASE_TIME + n * 60,
                # No name collected: the file keeps the name the service gave it (SPEC §14 renames named callers).
                "data.analysis.data_collection_results.caller_name": None,
            }
        )
    )


def post(client: httpx.Client, body: bytes) -> httpx.Response:
    headers = {"content-type": "application/json", "elevenlabs-signature": elevenlabs_signature(body)}
    return client.post("/webhook/post-call", content=body, headers=headers)


def health(server: LiveServer) -> dict:
    return server.client.get("/health").json()


def ids_in(path: Path, tag: str = "inbox") -> list[str]:
    return [line.rsplit("(", 1)[1].rstrip(")") for line in path.read_text().splitlines() if f"(conv_{tag}_" in line]


def caller(number: str) -> Call:
    return Call(number, "conv_" + "x" * 28, "CA" + "0" * 32)


# -- the inbox on disk ---------------------------------------------------------------------------------


def test_held_events_survive_in_order_and_a_torn_write_is_not_an_event(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    inbox = Inbox(tmp_path)
    calls = [HeldCall(conversation_id=f"conv_{n}", key="a" * 64, summary=f"s{n}", received=1.0) for n in range(3)]
    held = [inbox.hold(call) for call in calls]
    assert [h.seq for h in held] == [1000, 2000, 3000]  # one batch each: batch * 1000 + place in it
    slots = sorted(p.name for p in inbox.folder.iterdir())
    assert slots == ["slot-000", "slot-001", "slot-002"]  # each batch in a slot of its own while held
    assert all((inbox.folder / name).stat().st_size == SLOT_BYTES for name in slots)
    assert b'"conversation_id":"conv_0"' in (inbox.folder / "slot-000").read_bytes()
    # A write a crash cut short: its header promises more than was written. Never answered, never an event.
    torn = inbox.folder / "slot-003"
    torn.write_bytes(_HEADER.pack(_MAGIC, 9, 500, 1234) + b'[{"conversation_id": "conv_to' + bytes(100))
    (inbox.folder / "000000000004.tmp").write_bytes(b'[{"conversation_id": "conv_to')
    inbox.remove(held[1])
    inbox.remove(held[1])  # a second removal (a re-applied duplicate) is harmless
    # Free again, and nothing of the call is left in it (it is in the vault now, where an erasure reaches).
    assert (inbox.folder / "slot-001").read_bytes() == bytes(SLOT_BYTES)

    again = Inbox(tmp_path)  # a restart
    assert [(h.seq, h.call) for h in again.load()] == [(1000, calls[0]), (3000, calls[2])]
    assert again.clean_temporaries() == 1
    assert again.hold(calls[1]).seq == 4000  # numbering goes on after the highest held
    assert sorted(p.name for p in again.folder.iterdir()) == ["slot-000", "slot-001", "slot-002", "slot-003"]

    # Events held together share a batch, dropped once every one of them is applied.
    batch = again.hold_many(calls)
    assert [h.seq for h in batch] == [5000, 5001, 5002]
    again.remove(batch[0], batch[2])
    assert [h.seq for h in Inbox(tmp_path).load()] == [1000, 3000, 4000, 5000, 5001, 5002]  # a crash now
    again.remove(batch[1])
    assert [h.seq for h in Inbox(tmp_path).load()] == [1000, 3000, 4000]

    # A batch too big for a slot gets a file of its own.
    big = [HeldCall(conversation_id=f"conv_big_{n}", key="a" * 64, summary="s" * 1000) for n in range(80)]
    held_big = again.hold_many(big)
    assert (again.folder / "000000000006.json").is_file()
    assert [h.call for h in Inbox(tmp_path).load()][-80:] == big
    again.remove(*held_big)
    assert not (again.folder / "000000000006.json").exists()


def test_with_every_slot_taken_a_batch_gets_a_file_and_slots_are_reused_once_free(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    inbox = Inbox(tmp_path)
    calls = [HeldCall(conversation_id=f"conv_{n}", key="c" * 64, summary="s") for n in range(MAX_SLOT_FILES + 2)]
    held = [inbox.hold(call) for call in calls]
    names = sorted(p.name for p in inbox.folder.iterdir())
    assert len([n for n in names if n.startswith("slot-")]) == MAX_SLOT_FILES
    assert [n for n in names if n.endswith(".json")] == [
        f"{MAX_SLOT_FILES + 1:012d}.json",
        f"{MAX_SLOT_FILES + 2:012d}.json",
    ]
    inbox.remove(*held)
    assert not list(inbox.folder.glob("*.json"))
    inbox.hold(calls[0])
    assert len(list(inbox.folder.iterdir())) == MAX_SLOT_FILES  # a free slot taken, no new file
    assert [h.call for h in Inbox(tmp_path).load()] == [calls[0]]


def test_holds_from_many_threads_at_once_each_get_a_file_of_their_own(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    (tmp_path / ".git").mkdir()
    inbox = Inbox(tmp_path)
    calls = [HeldCall(conversation_id=f"conv_{n}", key="b" * 64, summary="s") for n in range(400)]
    with ThreadPoolExecutor(8) as pool:
        held = list(pool.map(inbox.hold, calls))
    assert sorted(h.seq for h in held) == [batch * 1000 for batch in range(1, 401)]
    assert sorted(h.call.conversation_id for h in Inbox(tmp_path).load()) == sorted(c.conversation_id for c in calls)


# -- a caller file broken by hand while events arrive ---------------------------------------------------


@pytest.mark.slow(seconds=8)
def test_a_file_broken_during_200_events_gets_every_event_after_the_fix(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory()
    call = caller("+12125550707")
    path = server.vault / call.file
    for n in range(50):
        response = post(server.client, event(call, n))
        assert response.status_code == 200
        assert response.json() == {"status": "held", "caller": call.key[:12]}
    assert server.wait_for(lambda: caught_up(server), timeout=10)
    assert ids_in(path) == [f"conv_inbox_{n:05d}" for n in range(50)]

    good = path.read_text()
    broken = good.replace("call_count:", "oops: [unclosed\ncall_count:", 1)
    path.write_text(broken)
    assert server.wait_for(lambda: call.file in health_errors(server)), "the watcher did not see the broken file"
    for n in range(50, 200):
        response = post(server.client, event(call, n))
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "held", "caller": call.key[:12]}
    assert server.wait_for(lambda: health(server)["inbox_parked"] == 150, timeout=10), health(server)
    status = health(server)
    assert status["inbox_held"] == 150 and status["status"] == "degraded"
    details = server.admin("GET", "/health").json()["inbox"]
    assert len(details) == 100 and all(item["parked"] and item["caller"] == call.key[:12] for item in details)
    assert [item["conversation_id"] for item in details] == [f"conv_inbox_{n:05d}" for n in range(50, 150)]
    assert path.read_text() == broken, "a broken file is never written"
    listed = run_cli(server.vault, "inbox")
    assert listed.returncode == 0
    assert listed.stderr.strip() == "150 post-call event(s) held"
    assert [line.split("\t")[3] for line in listed.stdout.splitlines()] == [
        f"conv_inbox_{n:05d}" for n in range(50, 200)
    ]
    assert all(line.split("\t")[2] == call.key[:12] for line in listed.stdout.splitlines())
    assert call.number[1:] not in listed.stdout

    before_fix = git(server.vault, "rev-parse", "HEAD").strip()
    path.write_text(good)  # the person fixes it
    assert server.wait_for(lambda: health(server)["inbox_held"] == 0, timeout=10), health(server)
    assert server.wait_for(lambda: caught_up(server), timeout=10)
    assert ids_in(path) == [f"conv_inbox_{n:05d}" for n in range(200)]
    # A caller's held events are written 50 to a change and a commit, each listed in its message.
    messages = git(server.vault, "log", "--format=%B%x1e", f"{before_fix}..HEAD").split("\x1e")
    listed = [m.count("call summary for") for m in messages if "call summary for" in m]
    assert listed == [50, 50, 50], listed
    assert Inbox(server.vault).load() == []
    committed = git(server.vault, "show", f"HEAD:{call.file}")
    assert committed == path.read_text()
    assert call.number[1:] not in git(server.vault, "log", "-p") and call.number[1:] not in server.logs()


def health_errors(server: LiveServer) -> dict:
    return server.admin("GET", "/health").json()["errors"]


def test_the_cli_applies_what_a_stopped_server_left_held(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory()
    call = caller("+12125550708")
    path = server.vault / call.file
    assert post(server.client, event(call, 0, "cli")).status_code == 200
    assert server.wait_for(lambda: caught_up(server), timeout=10)
    good = path.read_text()
    broken = good.replace("call_count:", "oops: [unclosed\ncall_count:", 1)
    path.write_text(broken)
    assert server.wait_for(lambda: call.file in health_errors(server))
    for n in (1, 2):
        assert post(server.client, event(call, n, "cli")).json()["status"] == "held"
    assert server.wait_for(lambda: health(server)["inbox_parked"] == 2)
    server.stop()
    doctor = run_cli(server.vault, "doctor")
    assert "2 post-call event(s) held in the inbox, not yet written" in doctor.stdout

    still = run_cli(server.vault, "inbox", "--apply")
    assert still.returncode == 1
    assert [line.split("\t")[:2] for line in still.stdout.splitlines()] == [["2000", "parked"], ["3000", "parked"]]
    assert still.stderr.strip() == "2 event(s) tried, 2 still held"
    path.write_text(good)
    applied = run_cli(server.vault, "inbox", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert [line.split("\t")[:2] for line in applied.stdout.splitlines()] == [["2000", "saved"], ["3000", "saved"]]
    assert ids_in(path, "cli") == ["conv_cli_00000", "conv_cli_00001", "conv_cli_00002"]
    assert git(server.vault, "status", "--porcelain") == ""
    assert run_cli(server.vault, "inbox").stderr.strip() == "0 post-call event(s) held"


# -- SIGKILL during an event storm -----------------------------------------------------------------------

CALLERS = [f"+1415557{i:04d}" for i in range(16)]


async def storm_until_killed(server: LiveServer, kill_after: int) -> set[str]:
    """Post events as fast as possible from 16 callers; SIGKILL the server after `kill_after` 200s."""
    acknowledged: set[str] = set()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:

        async def sender(w: int) -> None:
            call = caller(CALLERS[w])
            for n in range(10_000):
                body = event(call, w * 10_000 + n, "storm")
                headers = {"content-type": "application/json", "elevenlabs-signature": elevenlabs_signature(body)}
                try:
                    r = await client.post("/webhook/post-call", content=body, headers=headers)
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code == 200:
                    assert r.json()["status"] == "held"
                    acknowledged.add(f"conv_storm_{w * 10_000 + n:05d}")
                if len(acknowledged) >= kill_after and server.proc is not None:
                    os.kill(server.proc.pid, signal.SIGKILL)
                    return

        await asyncio.gather(*(sender(w) for w in range(len(CALLERS))))
    return acknowledged


@pytest.mark.slow(seconds=8)
def test_sigkill_during_an_event_storm_applies_every_acknowledged_event_exactly_once(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory()
    acknowledged = asyncio.run(storm_until_killed(server, kill_after=400))
    assert server.proc is not None
    server.proc.wait(timeout=10)
    assert server.proc.returncode == -signal.SIGKILL
    server.proc = None
    server.client.close()
    assert len(acknowledged) >= 400

    server.start()
    assert server.wait_for(lambda: caught_up(server), timeout=20), health(server)
    assert health(server)["status"] == "ok"
    assert git(server.vault, "status", "--porcelain") == ""
    recorded: list[str] = []
    for number in CALLERS:
        path = server.vault / "callers" / f"{key_for(number)[:12]}.md"
        recorded += ids_in(path, "storm") if path.exists() else []
    assert len(recorded) == len(set(recorded)), "an event was applied twice"
    missing = acknowledged - set(recorded)
    assert not missing, f"{len(missing)} acknowledged event(s) lost, e.g. {sorted(missing)[:3]}"
    for number in CALLERS:  # each caller's events in the order they were sent
        path = server.vault / "callers" / f"{key_for(number)[:12]}.md"
        if path.exists():
            own = ids_in(path, "storm")
            assert own == sorted(own)
