"""`POST /tools/remember` end to end (SPEC §6 "Tool remember", §3, §5): the agent's tool call, as
ElevenLabs sends it, to the real server; the caller file, git history and the next call are checked.

The tests share one server: those that save a fact save it for a caller of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.calls import CONV
from tests.conftest import (
    AGENT_NUMBER,
    WEBHOOK_SECRET,
    LiveServer,
    commits_since,
    fixture_json,
    git,
    vault_head,
    vault_snapshot,
)
from tests.live_helpers import caller_files_but, key_for

FACT = "Prefers to be called Mike"


@pytest.fixture
def server(shared: LiveServer) -> LiveServer:
    """The module's shared server."""
    return shared


@pytest.fixture
def quiet_server(shared: LiveServer) -> LiveServer:
    """The shared server, for the tests that must write nothing."""
    return shared


def tool_request(number: str, **changes: Any) -> dict[str, Any]:
    """The fixture's tool call, from the caller `number`."""
    return {**fixture_json("tool_remember_request.json"), "caller_id": number, **changes}


def file_of(number: str) -> str:
    return f"callers/{key_for(number)[:12]}.md"


def call_tool(server: LiveServer, body: dict | bytes, **headers: str) -> httpx.Response:
    if not headers:
        headers = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
    if isinstance(body, dict):
        return server.client.post("/tools/remember", json=body, headers=headers)
    return server.client.post("/tools/remember", content=body, headers={"Content-Type": "application/json", **headers})


def section(text: str, name: str) -> list[str]:
    """The lines under `## name`, up to the next heading, without blank lines."""
    lines = text.splitlines()
    start = lines.index(f"## {name}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return [line for line in lines[start:end] if line.strip()]


def saved(response: httpx.Response) -> str:
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "message"}
    assert body["status"] == "saved"
    assert isinstance(body["message"], str) and 0 < len(body["message"]) <= 120
    return body["message"]


def not_saved(response: httpx.Response) -> str:
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "message"}
    assert body["status"] == "not_saved"
    assert isinstance(body["message"], str) and body["message"].strip()
    return body["message"]


def test_the_tool_saves_the_fact_for_the_caller_in_one_tool_commit(
    server: LiveServer, fresh_number: Callable[[], str]
) -> None:
    number = fresh_number()
    key = key_for(number)
    start = vault_head(server.vault)

    response = call_tool(server, tool_request(number))

    saved(response)
    text = (server.vault / file_of(number)).read_text()
    assert section(text, "Facts") == [f"- {FACT}"]
    assert f'phone_hash: "{key}"' in text
    assert number not in text and number[1:] not in text
    # Committed before the answer: exactly one commit, saying for whom by short hash, Source: tool.
    assert commits_since(server.vault, start) == [f"fact for {key[:12]} in {CONV}\n\nSource: tool"]
    assert git_files_of_last_commit(server) == [file_of(number)]

    # The next call knows it.
    answer = server.personalize({**fixture_json("personalize_request.json"), "caller_id": number}).json()
    assert answer["dynamic_variables"]["caller_known"] is True
    assert f"- Fact: {FACT}" in answer["dynamic_variables"]["caller_memory"].splitlines()
    assert f"- Fact: {FACT}" in answer["conversation_config_override"]["agent"]["prompt"]["prompt"].splitlines()


def git_files_of_last_commit(server: LiveServer) -> list[str]:
    return git(server.vault, "show", "--name-only", "--format=", "HEAD").split()


def test_a_second_fact_is_appended_and_the_secret_may_come_as_x_webhook_secret(
    server: LiveServer, fresh_number: Callable[[], str]
) -> None:
    number = fresh_number()
    saved(call_tool(server, tool_request(number)))
    head = vault_head(server.vault)

    saved(call_tool(server, tool_request(number, fact="Has a dog named Rex"), **{"X-Webhook-Secret": WEBHOOK_SECRET}))

    text = (server.vault / file_of(number)).read_text()
    assert section(text, "Facts") == [f"- {FACT}", "- Has a dog named Rex"]
    assert commits_since(server.vault, head) == [f"fact for {key_for(number)[:12]} in {CONV}\n\nSource: tool"]


def test_a_fact_whose_commit_fails_is_not_saved_and_the_next_one_commits_both(
    server: LiveServer, fresh_number: Callable[[], str]
) -> None:
    # Another git holds the branch's ref lock: the commit fails, so the agent must not say "saved".
    number = fresh_number()
    short = key_for(number)[:12]
    request = tool_request(number)
    head = vault_head(server.vault)
    lock = server.vault / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("")
    try:
        message = not_saved(call_tool(server, request))
        assert len(message) <= 120 and "save" in message
        assert vault_head(server.vault) == head
        assert server.admin("GET", "/health").json()["git_error"]
        # The admin API says the same thing its way.
        api = server.admin("POST", f"/api/memory/{key_for(number)}", json={"fact": "Has a dog named Rex"})
        assert api.status_code == 503
    finally:
        lock.unlink()

    saved(call_tool(server, {**request, "fact": "Likes jazz"}))

    text = (server.vault / file_of(number)).read_text()
    assert section(text, "Facts") == [f"- {FACT}", "- Has a dog named Rex", "- Likes jazz"]
    # The failed changes rode along with the next commit, listed as retried; nothing is left dirty.
    assert commits_since(server.vault, head) == [
        f"3 changes\n\n- fact for {short} in {CONV}\n- fact for {short} in {CONV} (commit retried)\n"
        f"- fact for {short} (commit retried)\n\nSource: tool"
    ]
    assert git(server.vault, "status", "--porcelain") == ""
    assert server.admin("GET", "/health").json()["git_error"] is None


def test_on_an_outbound_call_the_fact_goes_to_the_called_party(
    server: LiveServer, fresh_number: Callable[[], str]
) -> None:
    called = fresh_number()
    others = caller_files_but(server.vault)
    saved(call_tool(server, {"fact": FACT, "caller_id": AGENT_NUMBER, "called_number": called}))
    assert section((server.vault / file_of(called)).read_text(), "Facts") == [f"- {FACT}"]
    assert caller_files_but(server.vault, file_of(called)) == others, "another caller's file was written"


def test_a_fact_is_one_line_whatever_the_model_sends(server: LiveServer, fresh_number: Callable[[], str]) -> None:
    number = fresh_number()
    saved(call_tool(server, {"fact": "  Likes\n## Notes\n- jazz  ", "caller_id": number}))
    text = (server.vault / file_of(number)).read_text()
    assert section(text, "Facts") == ["- Likes ## Notes - jazz"]
    assert section(text, "Notes") == []


# -- nothing written ---------------------------------------------------------------------------------


WITHHELD = ["anonymous", "", "client:x", None, "restricted", "+266696687", "sip:bob@example.com", "+1234"]


@pytest.mark.parametrize("caller_id", WITHHELD, ids=repr)
def test_a_withheld_caller_gets_not_saved_and_nothing_is_written(quiet_server: LiveServer, caller_id: str) -> None:
    files, head = vault_snapshot(quiet_server.vault), vault_head(quiet_server.vault)
    request = {**fixture_json("tool_remember_request.json"), "caller_id": caller_id}

    message = not_saved(call_tool(quiet_server, request))

    assert "withheld" in message
    assert vault_snapshot(quiet_server.vault) == files
    assert vault_head(quiet_server.vault) == head


def test_no_caller_id_at_all_gets_not_saved(quiet_server: LiveServer) -> None:
    files, head = vault_snapshot(quiet_server.vault), vault_head(quiet_server.vault)
    not_saved(call_tool(quiet_server, {"fact": FACT}))
    assert vault_snapshot(quiet_server.vault) == files
    assert vault_head(quiet_server.vault) == head


@pytest.mark.parametrize("fact", ["", "   ", None, "x" * 501])
def test_an_empty_or_overlong_fact_gets_not_saved(quiet_server: LiveServer, fact: str | None) -> None:
    files, head = vault_snapshot(quiet_server.vault), vault_head(quiet_server.vault)
    not_saved(call_tool(quiet_server, {**fixture_json("tool_remember_request.json"), "fact": fact}))
    assert vault_snapshot(quiet_server.vault) == files
    assert vault_head(quiet_server.vault) == head


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-webhook-secret"},
        {"Authorization": f"Basic {WEBHOOK_SECRET}"},
        {"Authorization": WEBHOOK_SECRET},
        {"X-Webhook-Secret": "wrong-webhook-secret"},
    ],
    ids=["none", "wrong bearer", "basic scheme", "no scheme", "wrong x-webhook-secret"],
)
def test_a_missing_or_wrong_secret_gets_401_and_nothing_is_written(
    quiet_server: LiveServer, headers: dict[str, str]
) -> None:
    files, head = vault_snapshot(quiet_server.vault), vault_head(quiet_server.vault)
    response = quiet_server.client.post(
        "/tools/remember", json=fixture_json("tool_remember_request.json"), headers=headers
    )
    assert response.status_code == 401
    assert response.json()["detail"] == "missing or wrong webhook secret"
    assert vault_snapshot(quiet_server.vault) == files
    assert vault_head(quiet_server.vault) == head


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"fact": 5, "caller_id": "+14155550123"}', b'{"fact": "x", "caller_id": 14155550123}'],
    ids=["empty", "not json", "array", "fact not a string", "caller_id not a string"],
)
def test_a_malformed_body_gets_400_with_a_message_and_nothing_is_written(quiet_server: LiveServer, body: bytes) -> None:
    files, head = vault_snapshot(quiet_server.vault), vault_head(quiet_server.vault)
    response = call_tool(quiet_server, body)
    assert response.status_code == 400
    assert response.json()["status_code"] == 400
    assert response.json()["detail"].strip()
    assert vault_snapshot(quiet_server.vault) == files
    assert vault_head(quiet_server.vault) == head


def test_an_oversized_body_gets_413(quiet_server: LiveServer) -> None:
    head = vault_head(quiet_server.vault)
    response = call_tool(quiet_server, b'{"fact": "' + b"x" * (70 * 1024) + b'", "caller_id": "+14155550123"}')
    assert response.status_code == 413
    assert vault_head(quiet_server.vault) == head
