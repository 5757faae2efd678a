"""`custom_llm_extra_body` (CUSTOM_LLM_EXTRA_BODY): who is calling, for a custom LLM, as a key and never a number.

Over real HTTP on one shared server with the setting on; the answers are checked like every other
personalize answer (`assert_valid_answer`), and their raw bytes for the caller's number.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import msgspec
import pytest

from server.config import load_settings
from server.elevenlabs import CustomLlmExtraBody, Personalization
from server.extrabody import UNKNOWN, extra_body, with_extra_body
from tests.conftest import LiveServer, run_cli
from tests.live_helpers import assert_valid_answer, key_for, request, soul_variables

SHARED_SERVER_ENV = {"CUSTOM_LLM_EXTRA_BODY": "true"}


@pytest.fixture
def server(shared: LiveServer) -> LiveServer:
    return shared


def assert_no_number(raw: bytes, number: str) -> None:
    """Neither the E.164 digits nor the national number appear anywhere in `raw`."""
    text = raw.decode()
    assert number.lstrip("+") not in text, text
    assert number[-10:] not in text, text


def extra_of(server: LiveServer, body: dict | bytes) -> dict:
    response = server.personalize(body)
    assert response.status_code == 200
    answer = response.json()
    assert_valid_answer(answer, soul_variables(server.vault))
    return answer["custom_llm_extra_body"]


def remember(server: LiveServer, number: str) -> None:
    response = server.admin("POST", f"/api/memory/{number}", json={"fact": "Prefers morning appointments"})
    assert response.status_code in (200, 201), response.text


def test_known_new_and_withheld_callers_each_get_theirs(server: LiveServer, fresh_number: Callable[[], str]) -> None:
    known, new = fresh_number(), fresh_number()
    remember(server, known)

    response = server.personalize(request(known))
    assert_no_number(response.content, known)
    answer = response.json()
    variables = assert_valid_answer(answer, soul_variables(server.vault))
    assert variables["caller_known"] is True
    assert answer["custom_llm_extra_body"] == {"caller_known": True, "caller_key": key_for(known)}
    # Last, after everything compose() decided: the answer is the composed one with one member more.
    assert list(answer)[-1] == "custom_llm_extra_body"

    response = server.personalize(request(new))
    assert_no_number(response.content, new)
    assert response.json()["custom_llm_extra_body"] == {"caller_known": False, "caller_key": key_for(new)}

    for withheld in ("anonymous", "+266696687", "client:alice", ""):
        assert extra_of(server, request(withheld)) == {"caller_known": False}


def test_bodies_that_name_nobody_still_get_a_valid_answer_with_it(server: LiveServer) -> None:
    for body in (b"not json", b"{}", b'{"caller_id": 5}', b"[]"):
        assert extra_of(server, body) == {"caller_known": False}


def test_previews_show_exactly_what_the_webhook_answers(server: LiveServer, fresh_number: Callable[[], str]) -> None:
    number = fresh_number()
    remember(server, number)
    api = server.admin("GET", f"/api/callers/{number}/preview")
    cli = run_cli(server.vault, "preview", "--json", number, CUSTOM_LLM_EXTRA_BODY="true")
    # Before the call: the call's recording (after the answer) changes the next answer.
    webhook = server.personalize(request(number))
    assert api.status_code == 200 and cli.returncode == 0, cli.stderr
    assert api.content == webhook.content
    assert json.loads(cli.stdout) == webhook.json()
    assert_no_number(cli.stdout.encode(), number)


def test_the_extra_body_is_a_pure_function_of_key_and_flag() -> None:
    key = "ab" * 32
    assert extra_body(key, True) == CustomLlmExtraBody(caller_known=True, caller_key=key)
    assert extra_body(key, False) == CustomLlmExtraBody(caller_known=False, caller_key=key)
    assert extra_body(None, True) == UNKNOWN  # no key: nobody a custom LLM could look up
    with_tenant = msgspec.json.encode(extra_body(key, True, tenant="acme-dental"))
    assert json.loads(with_tenant) == {"caller_known": True, "caller_key": key, "tenant": "acme-dental"}

    composed = msgspec.json.encode(Personalization(dynamic_variables={"caller_name": ""}))
    spliced = with_extra_body(composed, extra_body(key, False))
    assert json.loads(spliced) == {
        **json.loads(composed),
        "custom_llm_extra_body": {"caller_known": False, "caller_key": key},
    }
    with pytest.raises(ValueError):
        with_extra_body(b"[1]", UNKNOWN)


def test_it_is_off_by_default_and_read_like_every_switch() -> None:
    assert load_settings({}, env_file=None).custom_llm_extra_body is False
    assert load_settings({"CUSTOM_LLM_EXTRA_BODY": "yes"}, env_file=None).custom_llm_extra_body is True
