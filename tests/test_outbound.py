"""Outbound calls never mix callees (SPEC §12), with no number configured and with AGENT_NUMBERS set.

ElevenLabs sends an outbound call's webhooks with our own number as `caller_id`. Keyed on it, every
callee's facts would land in one file and be told to the next callee. The real server learns its own
numbers from its calls (kept as keys in `.git/`, never as numbers) and never takes them for a caller.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from server.phone import caller_key
from tests.conftest import ADMIN_KEY, PHONE_HASH_KEY, WEBHOOK_SECRET, LiveServer, git, run_cli
from tests.conftest import running_server as start_server
from tests.live_helpers import prompt_of, wait_until

AGENT = "+14155550177"  # our Twilio number, configured nowhere
CALLEES = [f"+4477009004{n:02d}" for n in range(50)]


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One vault with no AGENT_NUMBERS: its own numbers are only what its calls teach it."""
    with start_server(tmp_path_factory.mktemp("outbound"), AGENT_NUMBERS="") as server:
        yield server


def personalize(server: LiveServer, caller: str, called: str) -> dict[str, Any]:
    body = {
        "caller_id": caller,
        "called_number": called,
        "agent_id": "agent_out",
        "call_sid": "CA" + os.urandom(8).hex(),
    }
    response = server.personalize(body)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def remember(server: LiveServer, caller: str, called: str, fact: str) -> dict[str, Any]:
    body = {"fact": fact, "caller_id": caller, "called_number": called, "agent_id": "agent_out"}
    headers = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
    return server.client.post("/tools/remember", json=body, headers=headers).json()  # type: ignore[no-any-return]


def admin_health(server: LiveServer) -> dict[str, Any]:
    return server.client.get("/health", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()  # type: ignore[no-any-return]


@pytest.mark.slow(seconds=6)
def test_fifty_outbound_calls_from_one_number_never_tell_a_callee_another_ones_fact(bare: LiveServer) -> None:
    for n, callee in enumerate(CALLEES):
        assert (
            bare.admin("POST", f"/api/memory/{callee}", json={"fact": f"Callee fact number {n:02d}x"}).status_code
            == 200
        )
    # One inbound call to our number teaches the service that it is ours.
    assert personalize(bare, "+447700900499", AGENT)["dynamic_variables"]["caller_known"] is False
    wait_until(lambda: admin_health(bare)["learned_own_numbers"] == 1, what="the called number learned")
    for n, callee in enumerate(CALLEES):
        answer = json.dumps(personalize(bare, AGENT, callee))
        others = [m for m in range(50) if m != n and f"number {m:02d}x" in answer]
        assert others == [], f"callee {n} was told the facts of {others}"
        assert remember(bare, AGENT, callee, f"Outbound fact {n:02d}y")["status"] == "not_saved"
    health = admin_health(bare)
    assert health["outbound_calls"] == 50
    # Nothing was recorded for our own number, nor any outbound fact for anyone.
    assert bare.admin("GET", f"/api/callers/{caller_key(AGENT, PHONE_HASH_KEY.encode())}").status_code == 404
    assert "Outbound fact" not in git(bare.vault, "log", "-p", "--all")
    learned = (bare.vault / ".git" / "memory-bridge" / "own-numbers").read_text()
    assert learned == caller_key(AGENT, PHONE_HASH_KEY.encode()) + "\n"
    assert AGENT not in bare.logs() + learned + git(bare.vault, "log", "-p", "--all")
    doctor = run_cli(bare.vault, "doctor", AGENT_NUMBERS="")
    assert "outbound calls were seen" in doctor.stdout + doctor.stderr


def test_a_finished_call_teaches_the_agent_number_and_is_kept_under_the_callee(bare: LiveServer) -> None:
    from tests.test_tenants import post_call  # the same signed event

    ours, callee = "+14155550166", "+447700900498"
    learned = admin_health(bare)["learned_own_numbers"]
    response = post_call(
        bare, "agent_out", callee, "Talked about the delivery", agent_number=ours, direction="outbound"
    )
    assert response.json()["status"] == "held"  # written back in the background (SPEC §13)
    assert wait_until(lambda: admin_health(bare)["learned_own_numbers"] == learned + 1)
    assert wait_until(lambda: "Talked about the delivery" in prompt_of(personalize(bare, callee, "+14155550177")))
    assert prompt_of(personalize(bare, callee, "+14155550177")).count("Talked about the delivery") == 1
    assert personalize(bare, ours, callee)["dynamic_variables"]["caller_known"] is False


def test_with_agent_numbers_set_an_outbound_call_gets_its_callee(server_factory: Any) -> None:
    server = server_factory(AGENT_NUMBERS=AGENT)
    for n, callee in enumerate(CALLEES[:5]):
        assert (
            server.admin("POST", f"/api/memory/{callee}", json={"fact": f"Callee fact number {n:02d}x"}).status_code
            == 200
        )
    for n, callee in enumerate(CALLEES[:5]):
        answer = json.dumps(personalize(server, AGENT, callee))
        assert [m for m in range(5) if f"number {m:02d}x" in answer] == [n]
        assert remember(server, AGENT, callee, f"Outbound fact {n:02d}y")["status"] == "saved"
    facts = server.admin("GET", f"/api/callers/{CALLEES[3]}").json()["facts"]
    assert facts == ["Callee fact number 03x", "Outbound fact 03y"]
