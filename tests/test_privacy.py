"""Raw phone numbers never leave the request: not in logs, vault files or git history (SPEC §7)."""

from __future__ import annotations

import json

import phonenumbers
import pytest

from tests.conftest import AGENT_NUMBER, MARIA, OTHER, WEBHOOK_SECRET, LiveServer, git
from tests.live_helpers import commits, request, source_of, vault_files, wait_until

US_NATIONAL = ("(415) 555-0177", "+14155550177")
GB_NATIONAL = ("020 7946 0321", "+442079460321")
OUTBOUND_CUSTOMER = "+14155550188"
API_NUMBER = "+14155550166"
UNKNOWN_ON_API = "+14155550155"
IN_BROKEN_BODY = "+14155550144"

# (caller_id, called_number) of calls whose caller has a usable number: each is recorded.
RECORDED_CALLS = [
    (MARIA, AGENT_NUMBER),
    (OTHER, AGENT_NUMBER),
    (US_NATIONAL[0], AGENT_NUMBER),
    (GB_NATIONAL[0], OTHER),
    (AGENT_NUMBER, OUTBOUND_CUSTOMER),
    (MARIA, AGENT_NUMBER),
]
WITHHELD_CALLS = [("anonymous", AGENT_NUMBER), ("+266696687", AGENT_NUMBER), ("", AGENT_NUMBER)]


def forms(e164: str) -> set[str]:
    """The ways a number could leak: E.164, its digits without '+', and its national digits."""
    parsed = phonenumbers.parse(e164)
    national = phonenumbers.national_significant_number(parsed)
    return {e164, e164.removeprefix("+"), national}


ALL_NUMBERS = [
    MARIA,
    OTHER,
    AGENT_NUMBER,
    US_NATIONAL[1],
    GB_NATIONAL[1],
    OUTBOUND_CUSTOMER,
    API_NUMBER,
    UNKNOWN_ON_API,
    IN_BROKEN_BODY,
]


def count(server: LiveServer) -> int:
    return len(commits(server.vault))


def settled(server: LiveServer) -> bool:
    status = server.client.get("/health").json()
    return status["pending_writes"] == 0 and status["inbox_held"] == 0


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_phone_numbers_never_leave_the_request(server_factory, log_format: str) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(LOG_FORMAT=log_format, LOG_LEVEL="DEBUG")
    before = count(server)
    for caller_id, called in RECORDED_CALLS:
        response = server.personalize(request(caller_id, called))
        assert response.status_code == 200
        # Each recorded call is its own commit.
        expected = before + 1
        wait_until(lambda e=expected: count(server) == e and settled(server), what=f"call {caller_id!r} recorded")
        before = expected
    for caller_id, called in WITHHELD_CALLS:
        assert server.personalize(request(caller_id, called)).status_code == 200
    broken = f'{{"caller_id": "{IN_BROKEN_BODY}", "called_number": '.encode()
    assert server.personalize(broken).status_code == 200

    # The other ways a number reaches the service: the agent tool and the API (number in the path).
    tool = server.client.post(
        "/tools/remember",
        json={"fact": "Prefers tea", "caller_id": MARIA, "conversation_id": "conv_1"},
        headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"},
    )
    assert tool.status_code == 200
    assert tool.json()["status"] == "saved"
    recalled = server.client.post(
        "/tools/recall",
        json={"query": "does she like tea", "caller_id": MARIA, "conversation_id": "conv_2"},
        headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"},
    )
    assert recalled.json() == {"status": "found", "answer": "Fact: Prefers tea"}
    assert server.admin("POST", f"/api/memory/{API_NUMBER}", json={"fact": "Owns a bakery"}).status_code == 200
    assert server.admin("GET", f"/api/callers/{UNKNOWN_ON_API}").status_code == 404
    assert server.admin("GET", f"/api/callers/{MARIA}").status_code == 200
    assert server.admin("GET", f"/api/callers/{MARIA}/preview").status_code == 200
    # An error path that logs: Maria's file broken by hand, so her next call cannot be recorded.
    maria = server.admin("GET", f"/api/callers/{MARIA}").json()["file"]
    path = server.vault / maria
    good = path.read_text(encoding="utf-8")
    path.write_text(good.replace("call_count:", "call_count: [", 1), encoding="utf-8")
    wait_until(lambda: server.client.get("/health").json()["status"] == "degraded", what="the broken file")
    assert server.personalize(request(MARIA)).status_code == 200
    wait_until(lambda: "cannot record the call" in server.logs(), what="the error to be logged")
    path.write_text(good, encoding="utf-8")
    wait_until(lambda: server.client.get("/health").json()["status"] == "ok", what="the repaired file")
    wait_until(lambda: settled(server) and git(server.vault, "status", "--porcelain") == "", what="all committed")
    server.stop()  # flush and close the log

    history = commits(server.vault)
    sources = [source_of(c["message"]) for c in history]
    assert sources.count("webhook") == len(RECORDED_CALLS)
    assert sources.count("tool") == 1
    assert sources.count("api") == 1
    assert sources.count("cli") == 1  # creating the vault
    assert len(history) == len(RECORDED_CALLS) + 3 + sources.count("hand-edit")
    callers = {p.name for p in (server.vault / "callers").glob("*.md")}
    assert len(callers) == 6  # Maria, OTHER, two national, the outbound customer, the API's caller

    logs = server.logs()
    assert "memory-bridge ready" in logs
    if log_format == "json":
        for line in logs.splitlines():
            if line.strip():
                assert isinstance(json.loads(line), dict), line
    history_text = git(server.vault, "log", "-p", "--all")
    files = {path: path.read_text(encoding="utf-8", errors="replace") for path in vault_files(server.vault)}
    leaks = {form for number in ALL_NUMBERS for form in forms(number)} | {US_NATIONAL[0], GB_NATIONAL[0]}
    assert len(leaks) == 3 * len(ALL_NUMBERS) + 2
    for form in sorted(leaks):
        assert form not in logs, f"{form} in the log"
        assert form not in history_text, f"{form} in git history"
        for path, text in files.items():
            assert form not in text, f"{form} in {path}"
