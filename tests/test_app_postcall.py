"""`POST /webhook/post-call` end to end (SPEC §6 "Post-call", §3): ElevenLabs' signed payloads to the
real server under uvicorn; the caller file, git history and the next personalize answer are checked.

The tests that store a call share one server: each delivers the fixture's event as another caller's
call (its own number, conversation and call SID, put into the fixture's bytes). The refusals run on
a server of their own that never stores anything.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.calls import CONV, RAW, SUMMARY, Call, encode, file_of, payload
from tests.conftest import (
    AGENT_NUMBER,
    FIXTURES,
    LiveServer,
    caught_up,
    commits_since,
    elevenlabs_signature,
    running_server,
    vault_head,
    vault_snapshot,
)
from tests.live_helpers import caller_files_but


@pytest.fixture
def call(fresh_number: Callable[[], str]) -> Call:
    number = fresh_number()
    return Call(number, f"conv_{number[-4:]}k5zvyjhmfg983brhmhkd98n6", f"CA{number[-4:]}456789abcdef0123456789abcdef")


@pytest.fixture
def server(shared: LiveServer) -> LiveServer:
    """The module's shared server."""
    return shared


def deliver(server: LiveServer, body: bytes, signature: str | bytes | None = "sign") -> httpx.Response:
    """POST a post-call event as ElevenLabs does; `"sign"` signs it correctly now, None sends no header."""
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    if signature == "sign":
        signature = elevenlabs_signature(body)
    if signature is not None:
        headers.append((b"elevenlabs-signature", signature if isinstance(signature, bytes) else signature.encode()))
    return server.client.post("/webhook/post-call", content=body, headers=headers)


def named_call_commit(messages: list[str], call: Call) -> bool:
    """One commit: the call's summary, and the file taking the name the call collected (SPEC §14)."""
    assert len(messages) == 1, messages
    lines = messages[0].splitlines()
    assert lines[:3] == ["2 changes", "", f"- call summary for {call.key[:12]} ({call.conv})"], lines
    assert lines[3].startswith(f"- file named: callers/{call.key[:12]}.md -> callers/Maria"), lines
    return lines[4:] == ["", "Source: webhook"]


def wait_for_commits(server: LiveServer, since: str, count: int) -> list[str]:
    """Wait until `count` commits follow `since` (e.g. a call recorded after the personalize answer)."""
    found = server.wait_for(lambda: len(commits_since(server.vault, since)) >= count, timeout=5)
    assert found, f"expected {count} commit(s) after {since[:12]}, got {commits_since(server.vault, since)}"
    assert server.wait_for(lambda: caught_up(server)), "the server's index did not take the commits"
    return commits_since(server.vault, since)


def applied(server: LiveServer) -> None:
    """Wait until every held post-call event is applied, committed and in the server's index."""
    assert server.wait_for(lambda: caught_up(server), timeout=5), "the held event was not applied"


def prompt_of(answer: dict) -> str:
    return answer["conversation_config_override"]["agent"]["prompt"]["prompt"]


def detail(response: httpx.Response) -> str:
    """The message of an error answer: JSON with a non-empty `detail`."""
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status_code"] == response.status_code
    assert isinstance(body["detail"], str) and body["detail"].strip()
    return body["detail"]


# -- the fixture delivered ---------------------------------------------------------------------------


def test_the_transcription_adds_one_call_line_fills_the_empty_name_and_a_retry_changes_nothing(
    server: LiveServer, call: Call
) -> None:
    start = vault_head(server.vault)
    first = server.personalize(call.personalize()).json()
    assert first["dynamic_variables"]["caller_known"] is False
    assert wait_for_commits(server, start, 1) == [f"call from {call.key[:12]}\n\nSource: webhook"]
    path = file_of(server, call.key)
    before = path.read_text()
    assert 'name: ""\naliases: []\n' in before
    assert "## Calls\n\n## Notes\n" in before
    head = vault_head(server.vault)

    raw = call.raw()
    signature = elevenlabs_signature(raw)
    response = deliver(server, raw, signature)

    assert response.status_code == 200
    assert response.json() == {"status": "held", "caller": call.key[:12]}
    applied(server)
    # The name is known now: the file takes it (SPEC §14), and the generated heading follows.
    assert not path.exists() and file_of(server, call.key) == server.vault / "callers/Maria.md"
    after = (server.vault / "callers/Maria.md").read_text()
    expected = before.replace('name: ""\naliases: []\n', "name: Maria\naliases:\n  - Maria\n", 1)
    expected = expected.replace("## Calls\n", f"## Calls\n{call.line}\n", 1)
    expected = expected.replace(f"# Caller {call.key[:12]}\n", "# Maria\n", 1)
    assert after == expected
    assert after.count(call.conv) == 1
    # Committed before it was acknowledged: one commit, for whom by short hash, with its source.
    assert commits_since(server.vault, head) == [
        f"2 changes\n\n- call summary for {call.key[:12]} ({call.conv})\n"
        f"- file named: callers/{call.key[:12]}.md -> callers/Maria.md\n\nSource: webhook"
    ]
    assert call.number not in after and call.number[1:] not in after

    # A retried delivery, with the same header or a fresh one, changes nothing at all.
    files, head = vault_snapshot(server.vault), vault_head(server.vault)
    for header in (signature, elevenlabs_signature(raw)):
        again = deliver(server, raw, header)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate", "caller": call.key[:12]}
    assert vault_snapshot(server.vault) == files
    assert vault_head(server.vault) == head


def test_the_summary_is_in_the_next_call_within_one_second(server: LiveServer, call: Call) -> None:
    # Signed 29 minutes ago: still inside the 30-minute tolerance.
    raw = call.raw()
    response = deliver(server, raw, elevenlabs_signature(raw, timestamp=int(time.time()) - 29 * 60))
    acked = time.monotonic()
    assert response.status_code == 200
    assert response.json() == {"status": "held", "caller": call.key[:12]}
    applied(server)

    def summary_seen() -> dict | None:
        answer = server.personalize(call.personalize()).json()
        return answer if answer["dynamic_variables"]["last_call_summary"] == SUMMARY else None

    answer = server.wait_for(summary_seen, timeout=1.0)
    elapsed = time.monotonic() - acked
    assert answer is not None, "the summary did not reach the personalize answer within one second"
    assert elapsed <= 1.0
    variables = answer["dynamic_variables"]
    assert variables["caller_known"] is True
    assert variables["caller_name"] == "Maria"
    assert variables["last_call_date"] == "2025-11-29"
    assert variables["call_count"] == 0  # the call was never counted at personalize time in this test
    assert f"- Call 2025-11-29 22:59: {SUMMARY}" in variables["caller_memory"].splitlines()
    assert f"- Call 2025-11-29 22:59: {SUMMARY}" in prompt_of(answer).splitlines()
    assert "- Name: Maria" in prompt_of(answer).splitlines()


def test_a_later_call_adds_its_own_line_and_never_overwrites_a_name(server: LiveServer, call: Call) -> None:
    assert deliver(server, call.raw()).json()["status"] == "held"
    applied(server)
    later = f"{call.conv[:-6]}later"
    second = call.payload(
        {
            "data.conversation_id": later,
            "data.metadata.start_time_unix_secs": 1764543600,  # 2025-11-30 23:00 UTC
            "data.analysis.transcript_summary": "Asked about opening hours.",
            "data.analysis.data_collection_results": {
                "caller_name": {"data_collection_id": "caller_name", "value": "Mary"}
            },
        }
    )
    response = deliver(server, encode(second))
    assert response.status_code == 200
    assert response.json() == {"status": "held", "caller": call.key[:12]}
    applied(server)
    caller = server.admin("GET", f"/api/callers/{call.key}").json()
    assert caller["frontmatter"]["name"] == "Maria"
    assert caller["frontmatter"]["aliases"] == ["Maria"]
    assert [(c["date"], c["time"], c["summary"], c["conversation_id"]) for c in caller["calls"]] == [
        ("2025-11-29", "22:59", SUMMARY, call.conv),
        ("2025-11-30", "23:00", "Asked about opening hours.", later),
    ]


# -- finding the caller --------------------------------------------------------------------------------


def test_the_caller_is_found_from_system_caller_id_when_phone_call_is_absent(server: LiveServer, call: Call) -> None:
    start = vault_head(server.vault)
    body = encode(call.payload({"data.metadata.phone_call": None}))
    assert b"external_number" not in body

    response = deliver(server, body)

    assert response.status_code == 200
    assert response.json() == {"status": "held", "caller": call.key[:12]}
    applied(server)
    text = (file_of(server, call.key)).read_text()
    assert f"## Calls\n{call.line}\n" in text
    assert "name: Maria\n" in text
    assert named_call_commit(commits_since(server.vault, start), call)


def test_an_outbound_call_without_phone_call_is_written_to_the_called_party(server: LiveServer, call: Call) -> None:
    # Our own number as system__caller_id: the other party is system__called_number (SPEC §6).
    others = caller_files_but(server.vault)
    body = encode(
        call.payload(
            {
                "data.metadata.phone_call": None,
                "data.conversation_initiation_client_data.dynamic_variables.system__caller_id": AGENT_NUMBER,
                "data.conversation_initiation_client_data.dynamic_variables.system__called_number": call.number,
            }
        )
    )
    response = deliver(server, body)
    assert response.status_code == 200
    assert response.json() == {"status": "held", "caller": call.key[:12]}
    applied(server)
    assert f"## Calls\n{call.line}\n" in (file_of(server, call.key)).read_text()
    written = file_of(server, call.key).relative_to(server.vault).as_posix()
    assert caller_files_but(server.vault, written) == others, "another caller's file was written"


def test_the_caller_is_found_from_the_call_sid_seen_at_personalize_time(server: LiveServer, call: Call) -> None:
    start = vault_head(server.vault)
    server.personalize(call.personalize())  # with the call's SID
    wait_for_commits(server, start, 1)
    head = vault_head(server.vault)
    event = call.payload(
        {
            "data.metadata.phone_call": None,
            "data.conversation_initiation_client_data.dynamic_variables.system__caller_id": None,
        }
    )
    assert "phone_call" not in event["data"]["metadata"]
    assert "system__caller_id" not in event["data"]["conversation_initiation_client_data"]["dynamic_variables"]

    response = deliver(server, encode(event))

    assert response.status_code == 200
    assert response.json() == {"status": "held", "caller": call.key[:12]}
    applied(server)
    assert f"## Calls\n{call.line}\n" in (file_of(server, call.key)).read_text()
    assert named_call_commit(commits_since(server.vault, head), call)

    # A call SID the service never saw, with no number at all: nothing to write, nothing written.
    files, head = vault_snapshot(server.vault), vault_head(server.vault)
    unknown = copy.deepcopy(event)
    unknown["data"]["conversation_id"] = f"{call.conv[:-6]}unseen"
    unknown["data"]["conversation_initiation_client_data"]["dynamic_variables"]["system__call_sid"] = "CA" + "f" * 32
    for variables in ({}, {"system__caller_id": "anonymous"}, {"system__caller_id": "client:alice"}):
        unknown["data"]["conversation_initiation_client_data"]["dynamic_variables"].update(variables)
        ignored = deliver(server, encode(unknown))
        assert ignored.status_code == 200
        assert ignored.json() == {"status": "ignored", "reason": "no usable caller number"}
    assert vault_snapshot(server.vault) == files
    assert vault_head(server.vault) == head


# -- refusals and events with nothing to store (a server that must stay untouched) -------------------


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_server(tmp_path_factory.mktemp("postcall-quiet")) as server:
        yield server


def _one_byte_changed(body: bytes) -> bytes:
    changed = body.replace(b"Maria asked", b"Marie asked", 1)
    assert len(changed) == len(body) and sum(a != b for a, b in zip(changed, body, strict=True)) == 1
    return changed


def _refused_delivery(case: str) -> tuple[bytes, str | bytes | None]:
    now = int(time.time())
    good = elevenlabs_signature(RAW, timestamp=now)
    if case == "missing header":
        return RAW, None
    if case == "missing v0":
        return RAW, f"t={now}"
    if case == "v0 renamed":
        return RAW, good.replace("v0=", "v1=")
    if case == "one changed body byte":
        return _one_byte_changed(RAW), good
    if case == "wrong secret":
        return RAW, elevenlabs_signature(RAW, secret="wsec_some_other_secret", timestamp=now)
    if case == "older than 30 minutes":
        return RAW, elevenlabs_signature(RAW, timestamp=now - 30 * 60 - 5)
    if case == "re-serialised JSON":
        reserialised = json.dumps(json.loads(RAW)).encode()
        assert reserialised != RAW and json.loads(reserialised) == json.loads(RAW)
        return reserialised, good
    if case == "re-serialised JSON, compact":
        return json.dumps(json.loads(RAW), separators=(",", ":")).encode(), good
    if case == "non-ASCII timestamp":
        return RAW, b"t=\xb2,v0=" + good.split("v0=")[1].encode()
    if case == "non-ASCII hash":
        return RAW, f"t={now},v0=".encode() + b"\xe9" * 64
    raise AssertionError(case)


REFUSALS = [
    "missing header",
    "missing v0",
    "v0 renamed",
    "one changed body byte",
    "wrong secret",
    "older than 30 minutes",
    "re-serialised JSON",
    "re-serialised JSON, compact",
    "non-ASCII timestamp",
    "non-ASCII hash",
]


@pytest.mark.parametrize("case", REFUSALS)
def test_a_bad_signature_is_refused_with_401_and_writes_nothing(quiet_server: LiveServer, case: str) -> None:
    body, signature = _refused_delivery(case)
    files, head = vault_snapshot(quiet_server.vault), vault_head(quiet_server.vault)

    response = deliver(quiet_server, body, signature)

    assert response.status_code == 401
    assert "ElevenLabs-Signature" in detail(response)
    assert vault_snapshot(quiet_server.vault) == files
    assert vault_head(quiet_server.vault) == head
    assert not any(path.startswith("callers/") and path.endswith(".md") for path in files)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("post_call_audio.body", "post_call_audio"), ("call_initiation_failure.json", "call_initiation_failure")],
)
def test_audio_and_initiation_failure_events_are_accepted_and_store_nothing(
    quiet_server: LiveServer, name: str, kind: str
) -> None:
    body = (FIXTURES / name).read_bytes()
    files, head = vault_snapshot(quiet_server.vault), vault_head(quiet_server.vault)

    response = deliver(quiet_server, body)

    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "type": kind}
    assert vault_snapshot(quiet_server.vault) == files
    assert vault_head(quiet_server.vault) == head


MALFORMED = {
    "not JSON": b'{"type": "post_call_transcription", ',
    "a JSON array": b"[]",
    "no type": encode({"data": {"conversation_id": CONV}}),
    "no conversation_id": encode(payload({"data.conversation_id": None})),
    "empty conversation_id": encode(payload({"data.conversation_id": ""})),
    "conversation_id with a line break": encode(payload({"data.conversation_id": "conv_1)\n\n## Notes\n- x (conv_2"})),
    "a number where a string belongs": encode(payload({"data.metadata.phone_call.external_number": 14155550123})),
    "data not an object": encode({"type": "post_call_transcription", "data": "x"}),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_signed_but_malformed_event_gets_400_and_writes_nothing(quiet_server: LiveServer, case: str) -> None:
    files, head = vault_snapshot(quiet_server.vault), vault_head(quiet_server.vault)
    response = deliver(quiet_server, MALFORMED[case])
    assert response.status_code == 400
    detail(response)
    assert vault_snapshot(quiet_server.vault) == files
    assert vault_head(quiet_server.vault) == head


def test_odd_but_valid_events_never_get_a_500(server: LiveServer, call: Call) -> None:
    # A start time no calendar holds: the call is dated now instead.
    before = dt.datetime.now(dt.UTC)
    huge = call.payload({"data.metadata.start_time_unix_secs": 10**15})
    response = deliver(server, encode(huge))
    after = dt.datetime.now(dt.UTC)
    assert response.status_code == 200
    assert response.json() == {"status": "held", "caller": call.key[:12]}
    applied(server)
    calls = server.admin("GET", f"/api/callers/{call.key}").json()["calls"]
    assert len(calls) == 1
    assert calls[0]["date"] in {before.date().isoformat(), after.date().isoformat()}
    # A call SID that is not a string, and no number: ignored, not a crash.
    odd_sid = call.payload(
        {
            "data.conversation_id": f"{call.conv[:-6]}oddsid",
            "data.metadata.phone_call": None,
            "data.conversation_initiation_client_data.dynamic_variables.system__caller_id": None,
            "data.conversation_initiation_client_data.dynamic_variables.system__call_sid": ["CA1"],
        }
    )
    response = deliver(server, encode(odd_sid))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "reason": "no usable caller number"}
    # Unknown fields anywhere are ignored.
    extra = call.payload({"data.conversation_id": f"{call.conv[:-6]}extras", "data.something_new": {"a": [1, 2]}})
    extra["also_new"] = True
    response = deliver(server, encode(extra))
    assert response.status_code == 200
    assert response.json() == {"status": "held", "caller": call.key[:12]}
    applied(server)
