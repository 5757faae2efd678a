"""The §13 log lines' rate limit, and the last-resort answer, as units."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import msgspec
import pytest

from server.answers import last_resort
from server.compose import BUILTINS
from server.records import Soul
from server.requestlog import Refusals, call_answered, shown_agent


def test_refusals_are_logged_a_few_times_a_window_and_the_next_line_counts_what_was_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="memory_bridge.requests")
    refusals = Refusals(limit=3, window=60)
    written = [refusals.refused("/webhook/post-call", 401, "wrong signature", now=100 + n) for n in range(10)]
    assert written == [True] * 3 + [False] * 7
    assert refusals.refused("/tools/remember", 403, "no secret", now=161) is True
    assert [r.getMessage() for r in caplog.records] == [
        "refused /webhook/post-call: 401 wrong signature",
        "refused /webhook/post-call: 401 wrong signature",
        "refused /webhook/post-call: 401 wrong signature",
        "refused /tools/remember: 403 no secret (7 more refused since, not logged)",
    ]
    assert refusals.total == 11


def test_a_call_line_names_tenant_agent_key_prefix_known_and_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="memory_bridge.requests")
    call_answered("agent_7101k5zv", "ab" * 32, True, 0.734)
    call_answered("agent with spaces\n+14155550123", None, False, 12.5)
    assert [r.getMessage() for r in caplog.records] == [
        "call answered: tenant=default agent=agent_7101k5zv caller=abababababab known in 0.73 ms",
        "call answered: tenant=default agent=? caller=withheld new in 12.50 ms",
    ]
    assert shown_agent(None) == "?" and shown_agent("x" * 81) == "?"


def test_the_last_resort_answer_carries_the_souls_variables() -> None:
    soul = Soul(body="b", variables={"business_name": "our office", "seats": 4, "system__x": "no", "odd": True})
    answer = msgspec.json.decode(last_resort(SimpleNamespace(soul=soul)))  # type: ignore[arg-type]
    assert answer == {
        "type": "conversation_initiation_client_data",
        "dynamic_variables": {
            "business_name": "our office",
            "seats": 4,
            "odd": True,
            **dict.fromkeys(BUILTINS, ""),
            "caller_known": False,
            "call_count": 0,
        },
    }
