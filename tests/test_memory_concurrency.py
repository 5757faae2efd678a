"""Concurrency: a storm of writes from every writer, plus a person appending to the same files.

Every acknowledged write must be in the files and in git history exactly once, no hand edit may be
lost, the repository must stay sound, and personalize must keep answering throughout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_KEY, ELEVENLABS_SECRET, WEBHOOK_SECRET, fixture_json, git
from tests.live_helpers import key_for

CALLERS = [f"+1415555{i:04d}" for i in range(50)]
WRITES = 1000

# A person's editor appending to caller files (O_APPEND, as `echo >>` does), in its own process.
HAND_APPENDER = """
import sys, time, random
paths, count = sys.argv[1:-1], int(sys.argv[-1])
for n in range(count):
    with open(random.choice(paths), "a", encoding="utf-8") as fh:
        fh.write(f"- hand-{n} typed by a person\\n")
    time.sleep(0.01)
"""


def signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    mac = hmac.new(ELEVENLABS_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"ElevenLabs-Signature": f"t={stamp},v0={mac}", "Content-Type": "application/json"}


def post_call_body(number: str, conversation_id: str, summary: str) -> bytes:
    event = fixture_json("post_call_transcription.json")
    event["event_timestamp"] = int(time.time())
    data = event["data"]
    data["conversation_id"] = conversation_id
    data["metadata"]["phone_call"]["external_number"] = number
    data["analysis"]["transcript_summary"] = summary
    data["analysis"]["data_collection_results"] = {}
    return json.dumps(event).encode()


async def storm(url: str) -> tuple[dict[str, str], list[int]]:
    """Fire WRITES writes concurrently; return {marker: number} for each acknowledged one."""
    acknowledged: dict[str, str] = {}
    personalize_codes: list[int] = []
    rng = random.Random(7)
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(n: int) -> None:
            number = rng.choice(CALLERS)
            kind = n % 4
            marker = f"m{n:04d}x"
            if kind == 0:
                r = await client.post(
                    f"/api/memory/{key_for(number)}",
                    json={"fact": f"fact {marker}"},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
            elif kind == 1:
                r = await client.post(
                    "/tools/remember",
                    json={"fact": f"tool {marker}", "caller_id": number, "conversation_id": f"conv_t{n}"},
                    headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"},
                )
                assert r.json()["status"] == "saved", r.text
            elif kind == 2:
                body = post_call_body(number, f"conv_pc{n}", f"summary {marker}")
                r = await client.post("/webhook/post-call", content=body, headers=signed(body))
            else:
                r = await client.post(
                    "/api/notes",
                    json={"note": f"note {marker}", "phone_hash": key_for(number)},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
            if r.status_code == 200:
                acknowledged[marker] = number

        async def calls() -> None:
            for _ in range(100):
                r = await client.post(
                    "/webhook/personalize",
                    json={"caller_id": rng.choice(CALLERS), "called_number": "+14155550199", "call_sid": "CA1"},
                    headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"},
                )
                personalize_codes.append(r.status_code)
                await asyncio.sleep(0.02)

        await asyncio.gather(calls(), *(one(n) for n in range(WRITES)))
    return acknowledged, personalize_codes


def test_write_storm_with_hand_edits_loses_nothing(server_factory, vault_dir: Path) -> None:
    server = server_factory(vault_dir, HAND_EDIT_QUIET_SECONDS="0.5")
    # Every caller exists before the storm, so the person has files to append to.
    for number in CALLERS:
        r = server.admin("POST", f"/api/memory/{number}", json={"fact": "seed"})
        assert r.status_code == 200, r.text
    hand_paths = sorted(str(p) for p in (vault_dir / "callers").glob("*.md"))[:10]
    person = subprocess.Popen([sys.executable, "-c", HAND_APPENDER, *hand_paths, "200"])

    acknowledged, personalize_codes = asyncio.run(storm(server.url))
    assert person.wait(timeout=60) == 0

    assert len(acknowledged) == WRITES, "every write was acknowledged"
    assert personalize_codes and set(personalize_codes) == {200}

    # Wait for the hand edits' quiet period to pass and their commit to land.
    def settled() -> bool:
        return (
            git(vault_dir, "status", "--porcelain") == "" and server.client.get("/health").json()["pending_writes"] == 0
        )

    assert server.wait_for(settled, timeout=15)

    files = {p: p.read_text(encoding="utf-8") for p in (vault_dir / "callers").glob("*.md")}
    files.update({p: p.read_text(encoding="utf-8") for p in (vault_dir / "notes").glob("*.md")})
    everything = "\n".join(files.values())
    history = git(vault_dir, "log", "-p", "--format=commit %H")
    for marker in acknowledged:
        assert everything.count(marker) == 1, f"{marker} is not in the vault exactly once"
        added = [line for line in history.splitlines() if line.startswith("+") and marker in line]
        assert len(added) == 1, f"{marker} was not added to git history exactly once: {added}"
    for n in range(200):
        hand = f"- hand-{n} typed by a person"
        assert everything.count(hand) == 1, f"the hand edit {hand!r} was lost or duplicated"
    subprocess.run(["git", "-C", str(vault_dir), "fsck", "--strict"], check=True, capture_output=True)
    assert server.client.get("/health").json()["status"] == "ok"
