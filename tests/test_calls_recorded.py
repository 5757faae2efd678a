"""SPEC §13 end to end on the real server: the log lines, placeholders no variable fills, and the
server's own backfill every BACKFILL_MINUTES against the local stand-in of ElevenLabs' API."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.conftest import ELEVENLABS_SECRET, MARIA, LiveServer, run_cli
from tests.elevenlabs_standin import API_KEY, standin_api
from tests.live_helpers import MARIA_KEY, key_for, request, wait_until
from tests.test_backfill import conversation


def test_one_line_per_call_answered_per_refusal_and_per_forget_and_never_a_number(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: LiveServer = server_factory()
    assert server.personalize(request(MARIA)).status_code == 200
    assert server.personalize(request("anonymous")).status_code == 200
    lines = wait_until(
        lambda: re.findall(r"call answered: .*", server.logs()) if server.logs().count("call answered") >= 2 else None
    )
    assert re.fullmatch(
        rf"call answered: tenant=default agent=agent_7101k5zvyjhmfg983brhmhkd98n6 caller={MARIA_KEY[:12]} "
        r"new in \d+\.\d\d ms",
        lines[0],
    ), lines[0]
    assert re.fullmatch(r"call answered: tenant=default agent=agent_\w+ caller=withheld new in \d+\.\d\d ms", lines[1])
    wait_until(lambda: server.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 200)
    assert server.personalize(request(MARIA)).status_code == 200
    wait_until(lambda: f"caller={MARIA_KEY[:12]} known in" in server.logs())

    # Refusals: 25 requests with a wrong secret or signature, at most 10 lines in the minute.
    for _ in range(15):
        assert server.personalize(request(MARIA), Authorization="Bearer wrong-secret-0").status_code == 401
    for _ in range(10):
        response = server.client.post(
            "/webhook/post-call", content=b"{}", headers={"elevenlabs-signature": "t=1,v0=00"}
        )
        assert response.status_code == 401
    assert server.client.post("/tools/remember", json={"fact": "x"}).status_code == 401
    refused = wait_until(lambda: re.findall(r"refused (\S+): (\d+) .*", server.logs()) or None)
    time.sleep(0.2)  # nothing more may come: the server logged as it answered
    refused = re.findall(r"refused (\S+): (\d+) .*", server.logs())
    assert refused == [("/webhook/personalize", "401")] * 10

    assert server.admin("DELETE", f"/api/callers/{MARIA_KEY}").status_code == 200
    wait_until(lambda: f"forgot caller {MARIA_KEY[:12]} (source api)" in server.logs())
    logs = server.logs()
    assert MARIA not in logs and MARIA[1:] not in logs and ELEVENLABS_SECRET not in logs


def test_a_placeholder_no_variable_fills_is_reported_and_sent_as_text(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: LiveServer = server_factory()
    soul = server.vault / "soul.md"
    text = soul.read_text()
    soul.write_text(
        text.replace("Opening hours: {{business_hours}}.", "Opening hours: {{business_hours}}. Ask for {{nmae}}.")
    )

    def reported() -> list[str] | None:
        return server.admin("GET", "/health").json()["unfilled_placeholders"] or None

    assert wait_until(reported) == ["body: {{nmae}}"]
    prompt = server.personalize(request(MARIA)).json()["conversation_config_override"]["agent"]["prompt"]["prompt"]
    assert "Ask for { {nmae} }." in prompt and "{{business_hours}}" in prompt and "{{nmae}}" not in prompt
    doctor = run_cli(server.vault, "doctor")
    assert (
        "soul.md's body uses {{nmae}}, which no variable fills: declare nmae in soul.md's frontmatter "
        "(it is sent as plain text until then)"
    ) in doctor.stdout


@pytest.mark.slow(seconds=4)
def test_the_server_backfills_the_last_day_on_its_schedule(server_factory) -> None:  # type: ignore[no-untyped-def]
    number = "+12125557100"
    now = int(time.time())
    with standin_api() as standin:
        old = conversation(1, number)
        old["metadata"]["start_time_unix_secs"] = now - 3 * 86400  # older than the day looked at
        recent = conversation(2, number)
        recent["metadata"]["start_time_unix_secs"] = now - 3600
        standin.add(old)
        standin.add(recent)
        server: LiveServer = server_factory(
            ELEVENLABS_API_KEY=API_KEY, ELEVENLABS_API_URL=standin.url, BACKFILL_MINUTES="0.01"
        )
        key = key_for(number)

        def text_of() -> str:
            # Found through the API: once the caller's name is known, the file takes it (SPEC §14).
            found = server.admin("GET", f"/api/callers/{key}")
            return (server.vault / found.json()["file"]).read_text() if found.status_code == 200 else ""

        wait_until(lambda: "(conv_backfill_00002)" in text_of(), timeout=10)
        later = conversation(3, number)
        later["metadata"]["start_time_unix_secs"] = now - 60
        standin.add(later)
        wait_until(lambda: "(conv_backfill_00003)" in text_of(), timeout=10)
        lists = standin.list_requests
        wait_until(lambda: standin.list_requests >= lists + 2, timeout=10)  # two more rounds
        text = text_of()
        assert text.count("(conv_backfill_00002)") == 1 and text.count("(conv_backfill_00003)") == 1
        assert "(conv_backfill_00001)" not in text
        assert re.search(r"backfill: \d+ conversation\(s\) listed", server.logs())
        status = server.admin("GET", "/health").json()["backfill"]
        assert status["last_error"] is None
        assert status["last_report"]["listed"] == 2 and status["last_report"]["already"] == 2
    assert Path(server.vault).is_dir()
