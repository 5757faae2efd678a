"""`POST /tools/recall` end to end (SPEC §16 "Recall mid-call"), and the prompt of a caller whose memory
outgrew it: the real server, hand-written caller files, tool calls as ElevenLabs sends them.

The tests share one server; each writes callers of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import WEBHOOK_SECRET, LiveServer, fixture_json, settled
from tests.live_helpers import caller_md, key_for, known_file, preview, prompt_of, wait_until

BOUND = 4_000
SHARED_SERVER_ENV = {"PROMPT_MAX_CHARS": str(BOUND)}


@pytest.fixture
def server(shared: LiveServer) -> LiveServer:
    """The module's shared server."""
    return shared


def recall_request(number: str, query: str, **changes: Any) -> dict[str, Any]:
    """The tool call ElevenLabs makes: the remember fixture's bound identity fields, and a query."""
    base = {k: v for k, v in fixture_json("tool_remember_request.json").items() if k != "fact"}
    return {**base, "caller_id": number, "query": query, **changes}


def ask(server: LiveServer, body: dict[str, Any], **headers: str) -> httpx.Response:
    return server.client.post(
        "/tools/recall", json=body, headers=headers or {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
    )


def answer_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "answer"} and body["status"] in {"found", "nothing"}
    assert (body["status"] == "found") == bool(body["answer"])
    assert len(body["answer"]) <= 400
    return dict(body)


def hand_write(server: LiveServer, number: str, text: str) -> None:
    """A caller file a person wrote, taken into the index and committed."""
    (server.vault / "callers" / f"{key_for(number)[:12]}.md").write_text(text)
    wait_until(lambda: known_file(server, number) and settled(server), what="the hand-written file taken in")


def test_recall_answers_with_the_callers_own_best_lines_only(
    server: LiveServer, fresh_number: Callable[[], str]
) -> None:
    ana, ben = fresh_number(), fresh_number()
    hand_write(
        server,
        ana,
        caller_md(
            ana,
            name="Ana",
            facts=["Drives a red bicycle"],
            calls=[
                "2026-10-01 09:00 · Asked about the invoice for the bicycle repair. (conv_ana1)",
                "2026-11-02 10:00 · Paid the invoice by card. (conv_ana2)",
            ],
            notes="- 2026-11-03: invoice copy sent by email",
        ),
    )
    hand_write(
        server,
        ben,
        caller_md(
            ben, name="Ben", facts=["Has a blue bicycle"], calls=["2026-11-05 11:00 · Invoice question. (conv_ben1)"]
        ),
    )

    body = answer_of(ask(server, recall_request(ana, "the bicycle invoice")))

    assert body == {
        "status": "found",
        "answer": "\n".join(
            [
                "Call 2026-10-01 09:00: Asked about the invoice for the bicycle repair.",
                "Note: 2026-11-03: invoice copy sent by email",
                "Call 2026-11-02 10:00: Paid the invoice by card.",
                "Fact: Drives a red bicycle",
            ]
        ),
    }
    ben_answer = answer_of(ask(server, recall_request(ben, "the bicycle invoice")))["answer"]
    assert ben_answer == "Call 2026-11-05 11:00: Invoice question.\nFact: Has a blue bicycle"
    assert answer_of(ask(server, recall_request(ana, "submarine"))) == {"status": "nothing", "answer": ""}


@pytest.mark.parametrize("caller_id", ["anonymous", "", "+266696687", "client:web", None])
def test_a_withheld_caller_gets_an_empty_answer(server: LiveServer, caller_id: str | None) -> None:
    assert answer_of(ask(server, recall_request("x", "invoice", caller_id=caller_id))) == {
        "status": "nothing",
        "answer": "",
    }


def test_an_unknown_caller_gets_an_empty_answer_and_no_file(
    server: LiveServer, fresh_number: Callable[[], str]
) -> None:
    number = fresh_number()
    assert answer_of(ask(server, recall_request(number, "invoice"))) == {"status": "nothing", "answer": ""}
    assert known_file(server, number) is None


def test_recall_needs_the_webhook_secret(server: LiveServer, fresh_number: Callable[[], str]) -> None:
    response = ask(server, recall_request(fresh_number(), "invoice"), Authorization="Bearer wrong")
    assert response.status_code == 401
    response = server.client.post("/tools/recall", json=recall_request(fresh_number(), "invoice"))
    assert response.status_code == 401


def test_a_caller_with_500_calls_the_prompt_keeps_facts_and_counts_older_calls_and_recall_finds_the_oldest(
    server: LiveServer, fresh_number: Callable[[], str]
) -> None:
    number = fresh_number()
    facts = [f"Fact {n}: prefers option {n}" for n in range(10)]
    calls = ["2024-01-02 09:00 · Ordered the blue teapot with the chipped lid. (conv_teapot)"] + [
        f"2025-{1 + n // 28 % 12:02d}-{1 + n % 28:02d} 10:00 · Call {n} about order {n}. (conv_n{n})"
        for n in range(499)
    ]
    hand_write(server, number, caller_md(number, name="Ana Ruiz", facts=facts, calls=calls, call_count=500))

    answer = preview(server, number)
    assert answer is not None
    prompt = prompt_of(answer)
    assert len(prompt) <= BOUND
    lines = prompt.splitlines()
    assert "- Name: Ana Ruiz" in lines
    assert all(f"- Fact: {fact}" in lines for fact in facts)
    shown = [line for line in lines if line.startswith("- Call 2")]
    assert 0 < len(shown) < 500 and shown[-1] == "- Call 2025-06-23 10:00: Call 498 about order 498."
    assert f"- Older calls: {500 - len(shown)} more not shown here; the recall tool can look them up." in lines
    assert "teapot" not in prompt

    body = answer_of(ask(server, recall_request(number, "the teapot I ordered")))
    assert body["answer"].splitlines()[0] == "Call 2024-01-02 09:00: Ordered the blue teapot with the chipped lid."


def test_a_malformed_body_gets_400(server: LiveServer) -> None:
    response = server.client.post(
        "/tools/recall",
        content=json.dumps({"query": {"nested": 1}}).encode(),
        headers={"Authorization": f"Bearer {WEBHOOK_SECRET}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
