"""Facts from every call end to end (SPEC §16): signed post-call events whose `new_facts` data collection
comes in every shape ElevenLabs could send, to the real server; the caller file, git history and the
next call are checked, and redelivery, known facts and facts a person deleted add nothing.

The tests share one server; each delivers the fixture's event as a call of its own caller.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from tests.calls import Call, encode, file_of
from tests.conftest import LiveServer, caught_up, commits_since, elevenlabs_signature, git, vault_head
from tests.live_helpers import caller_md, prompt_of, wait_until

THREE = ["Has a cat named Miso", "Works night shifts at the hospital", "Prefers text messages over calls"]
FIFTY = "\n".join(f"- Fact number {n}" for n in range(50))
TEN_KB = "\n".join(f"- Detail {n}: " + "lorem ipsum " * 8 for n in range(110))


@pytest.fixture
def server(shared: LiveServer) -> LiveServer:
    """The module's shared server."""
    return shared


@pytest.fixture
def call(fresh_number: Callable[[], str]) -> Call:
    number = fresh_number()
    return Call(number, f"conv_{number[-4:]}k5zvyjhmfg983brhmhkd98n6", f"CA{number[-4:]}456789abcdef0123456789abcdef")


def body(call: Call, value: object, conversation: str | None = None) -> bytes:
    """The fixture's event for `call` with only a `new_facts` data-collection result of `value`."""
    result = {"data_collection_id": "new_facts", "value": value, "json_schema": {"type": "string"}, "rationale": "-"}
    data = call.payload({"data.analysis.data_collection_results": {"new_facts": result}})
    if conversation is not None:
        data["data"]["conversation_id"] = conversation
    return encode(data)


def deliver(server: LiveServer, raw: bytes) -> None:
    """POST a signed event and wait until it is applied and in the index."""
    headers = {"content-type": "application/json", "elevenlabs-signature": elevenlabs_signature(raw)}
    response: httpx.Response = server.client.post("/webhook/post-call", content=raw, headers=headers)
    assert response.status_code == 200, response.text
    wait_until(lambda: caught_up(server), what="the event applied")


def facts_in(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("## Facts") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("#"))
    return [line for line in lines[start:end] if line.strip()]


SHAPES = {
    "lines": ("\n".join(THREE), THREE),
    "bullets": ("- " + "\n- ".join(THREE) + "\n", THREE),
    "json-encoded": (json.dumps(THREE), THREE),
    "json-list": (THREE, THREE),
    "empty": ("", []),
    "none-said": ("None", []),
    "null": (None, []),
    "fifty-lines": (FIFTY, [f"Fact number {n}" for n in range(5)]),
    "ten-kb": (TEN_KB, [f"Detail {n}: " + " ".join(["lorem ipsum"] * 8) for n in range(5)]),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_adds_the_bounded_clean_facts_once_in_the_call_commit(
    server: LiveServer, call: Call, shape: str
) -> None:
    value, expected = SHAPES[shape]
    start = vault_head(server.vault)

    deliver(server, body(call, value))

    text = file_of(server, call.key).read_text()
    assert facts_in(text) == [f"- {fact} ({call.conv})" for fact in expected]
    assert call.line in text.splitlines()
    learned = f", {len(expected)} new facts" if expected else ""
    (message,) = commits_since(server.vault, start)
    assert message.splitlines()[0] == f"call summary for {call.key[:12]} ({call.conv}){learned}"
    assert call.number not in text and call.number not in message

    # Redelivered: nothing changes, no commit.
    head = vault_head(server.vault)
    deliver(server, body(call, value))
    assert file_of(server, call.key).read_text() == text
    assert vault_head(server.vault) == head

    if expected:  # the next call hears them, without the conversation id
        answer = server.personalize(call.personalize()).json()
        assert f"- Fact: {expected[0]}" in prompt_of(answer).splitlines()


def test_facts_already_known_or_repeated_are_not_added_twice(server: LiveServer, call: Call) -> None:
    path = server.vault / "callers" / f"{call.key[:12]}.md"
    path.write_text(caller_md(call.number, name="", facts=["Has a dog named Rex"], calls=[]))
    wait_until(lambda: git(server.vault, "status", "--porcelain") == "" and caught_up(server), what="hand commit")

    deliver(server, body(call, "has a DOG named rex.\nLoves hiking\nloves  hiking!\nSpeaks Spanish"))

    assert facts_in(path.read_text()) == [
        "- Has a dog named Rex",
        f"- Loves hiking ({call.conv})",
        f"- Speaks Spanish ({call.conv})",
    ]
    # A later call saying the same again adds nothing but its call line.
    other = f"conv_{call.number[-4:]}zzzzzzzzzzzzzzzzzzzzzzzzzz"
    deliver(server, body(call, "- Loves hiking\n- Speaks spanish", conversation=other))
    assert len(facts_in(path.read_text())) == 3
    assert path.read_text().count(f"({other})") == 1


def test_a_fact_a_person_deleted_is_not_added_again_by_a_redelivery(server: LiveServer, call: Call) -> None:
    deliver(server, body(call, THREE))
    path = file_of(server, call.key)
    text = path.read_text()
    for line in (f"- {THREE[1]} ({call.conv})", call.line):  # the fact, and even the call line
        text = text.replace(line + "\n", "")
    path.write_text(text)
    wait_until(lambda: git(server.vault, "status", "--porcelain") == "" and caught_up(server), what="hand commit")

    deliver(server, body(call, THREE))

    after = path.read_text()
    assert facts_in(after) == [f"- {THREE[0]} ({call.conv})", f"- {THREE[2]} ({call.conv})"]
    assert after.count(call.line) == 1  # the call line comes back (a call is a record); the fact does not
