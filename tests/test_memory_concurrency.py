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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, ELEVENLABS_SECRET, WEBHOOK_SECRET, fixture_json, git
from tests.live_helpers import key_for

CALLERS = [f"+1415555{i:04d}" for i in range(50)]
# Fifty writes at once (one per connection), every kind mixed, on fifty callers' files, ten of them
# being typed into by a person the whole time: five writes per connection keep all fifty busy through
# the storm. A thousand writes made the same races, for four times as long.
CONNECTIONS = 50
WRITES = 250

# A person's editor appending to caller files (O_APPEND, as `echo >>` does), in its own process,
# from before the first write of the storm until the file `stop` appears after its last; it prints
# how many lines it appended.
# At most 200 lines, as before the suite was shortened: a line appended through a descriptor opened
# just before one of our atomic renames, and written just after it, lands in the replaced file and is
# lost (a known limit of rename-based writes against a concurrent O_APPEND writer, see the README).
HAND_APPENDER = """
import os, sys, time, random
stop, paths = sys.argv[1], sys.argv[2:]
n = 0
while n == 0 or (n < 200 and not os.path.exists(stop)):
    with open(random.choice(paths), "a", encoding="utf-8") as fh:
        fh.write(f"- hand-{n} typed by a person\\n")
    n += 1
    time.sleep(0.01)
print(n)
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
    """Fire WRITES writes concurrently; return {marker: number} for each acknowledged one.

    Personalize is called every 20 ms for as long as the writes go on.
    """
    acknowledged: dict[str, str] = {}
    personalize_codes: list[int] = []
    rng = random.Random(7)
    writing = True
    limits = httpx.Limits(max_connections=CONNECTIONS)
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
            while writing:
                r = await client.post(
                    "/webhook/personalize",
                    json={"caller_id": rng.choice(CALLERS), "called_number": "+14155550199", "call_sid": "CA1"},
                    headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"},
                )
                personalize_codes.append(r.status_code)
                await asyncio.sleep(0.02)

        async def writes() -> None:
            nonlocal writing
            try:
                await asyncio.gather(*(one(n) for n in range(WRITES)))
            finally:
                writing = False

        await asyncio.gather(calls(), writes())
    return acknowledged, personalize_codes


@pytest.mark.slow(seconds=10)
def test_write_storm_with_hand_edits_loses_nothing(server_factory, vault_dir: Path) -> None:
    server = server_factory(vault_dir, HAND_EDIT_QUIET_SECONDS="0.5")
    # Every caller exists before the storm, so the person has files to append to.
    with ThreadPoolExecutor(8) as pool:
        seeded = list(
            pool.map(lambda number: server.admin("POST", f"/api/memory/{number}", json={"fact": "seed"}), CALLERS)
        )
    assert [r.status_code for r in seeded] == [200] * len(CALLERS), [r.text for r in seeded]
    hand_paths = sorted(p for p in (vault_dir / "callers").glob("*.md"))[:10]
    stop = vault_dir.parent / "stop-typing"
    person = subprocess.Popen(
        [sys.executable, "-c", HAND_APPENDER, str(stop), *map(str, hand_paths)], stdout=subprocess.PIPE, text=True
    )
    # The storm starts once the person is typing, and they go on until it is over.
    assert server.wait_for(lambda: any("- hand-0 typed" in p.read_text(encoding="utf-8") for p in hand_paths))
    try:
        acknowledged, personalize_codes = asyncio.run(storm(server.url))
    finally:
        stop.touch()
    typed, _ = person.communicate(timeout=60)
    assert person.returncode == 0
    hand_edits = int(typed)
    assert hand_edits >= 20, f"the person typed only {hand_edits} lines during the storm"

    assert len(acknowledged) == WRITES, "every write was acknowledged"
    assert personalize_codes and set(personalize_codes) == {200}  # calls answered all through the storm

    # Wait for the hand edits' quiet period to pass and their commit to land, and for every held
    # post-call event to be written back (acknowledged once held, SPEC §13).
    def settled() -> bool:
        status = server.client.get("/health").json()
        idle = status["pending_writes"] == 0 and status["inbox_held"] == 0
        return idle and git(vault_dir, "status", "--porcelain") == ""

    assert server.wait_for(settled, timeout=15)

    files = {p: p.read_text(encoding="utf-8") for p in (vault_dir / "callers").glob("*.md")}
    files.update({p: p.read_text(encoding="utf-8") for p in (vault_dir / "notes").glob("*.md")})
    everything = "\n".join(files.values())
    history = git(vault_dir, "log", "-p", "--format=commit %H")
    for marker in acknowledged:
        assert everything.count(marker) == 1, f"{marker} is not in the vault exactly once"
        added = [line for line in history.splitlines() if line.startswith("+") and marker in line]
        assert len(added) == 1, f"{marker} was not added to git history exactly once: {added}"
    for n in range(hand_edits):
        hand = f"- hand-{n} typed by a person"
        assert everything.count(hand) == 1, f"the hand edit {hand!r} was lost or duplicated"
    subprocess.run(["git", "-C", str(vault_dir), "fsck", "--strict"], check=True, capture_output=True)
    assert server.client.get("/health").json()["status"] == "ok"
