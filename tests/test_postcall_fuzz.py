"""A fuzz of post-call bodies built from the SDK's payload types (SPEC §13): every optional field null
or absent, unknown event types, a 50 MB audio event. A correctly signed event never gets a 4xx or 5xx,
and the server's memory (RSS) never grows by more than 20 MB. Real server under uvicorn.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ELEVENLABS_SECRET, LiveServer, caught_up, elevenlabs_signature, running_server

NUMBERS = ["+12125556001", "+12125556002", "+442071838751", "anonymous", "", "client:alice", "+266696687"]
MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_server(tmp_path_factory.mktemp("fuzz")) as live:
        for _ in range(3):  # warm up: the allocator's arenas, the connection, the first event held
            small = b'{"type":"post_call_audio","data":{"full_audio":"SUQz"}}'
            signed = {"elevenlabs-signature": elevenlabs_signature(small)}
            assert live.client.post("/webhook/post-call", content=small, headers=signed).status_code == 200
        live.baseline_rss = rss(live)  # type: ignore[attr-defined]
        yield live


def rss(server: LiveServer) -> int:
    """The server process's resident memory, in bytes."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def optional(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field the SDK declares optional: its value, null, or (with `ABSENT`) left out."""
    return st.one_of(value, st.none(), st.just(ABSENT))


ABSENT = object()


def obj(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not ABSENT})


text = st.text(max_size=40)
scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False), text
)
phone_call = obj(
    type=optional(st.sampled_from(["twilio", "sip_trunking", "exotel"])),
    direction=optional(st.sampled_from(["inbound", "outbound"])),
    phone_number_id=optional(text),
    agent_number=optional(st.sampled_from(NUMBERS)),
    external_number=optional(st.sampled_from(NUMBERS)),
    stream_sid=optional(text),
    call_sid=optional(st.text(alphabet="CA0123456789abcdef", min_size=2, max_size=34)),
)
metadata = obj(
    start_time_unix_secs=optional(st.integers(0, 2**33)),
    call_duration_secs=optional(st.integers(0, 10**5)),
    phone_call=optional(phone_call),
    termination_reason=optional(text),
    main_language=optional(text),
)
collected = obj(data_collection_id=optional(text), value=optional(scalar), rationale=optional(text))
analysis = obj(
    transcript_summary=optional(text),
    call_successful=optional(st.sampled_from(["success", "failure", "unknown"])),
    data_collection_results=optional(
        st.dictionaries(st.sampled_from(["caller_name", "topic", "x"]), st.one_of(collected, st.none()), max_size=3)
    ),
    evaluation_criteria_results=optional(st.just({})),
    call_summary_title=optional(text),
)
initiation = obj(
    dynamic_variables=optional(
        st.dictionaries(
            st.sampled_from(["system__caller_id", "system__called_number", "system__call_sid", "user_name"]),
            st.one_of(st.sampled_from(NUMBERS), scalar),
            max_size=4,
        )
    ),
    user_id=optional(text),
    conversation_config_override=optional(st.just({})),
)
turn = obj(role=st.sampled_from(["user", "agent"]), message=optional(text), time_in_call_secs=st.integers(0, 600))
transcription = obj(
    agent_id=st.just("agent_fuzz"),
    agent_name=optional(text),
    conversation_id=st.from_regex(r"conv_fuzz_[a-z0-9]{8}", fullmatch=True),
    status=optional(st.sampled_from(["done", "processing", "failed"])),
    user_id=optional(text),
    transcript=optional(st.lists(turn, max_size=3)),
    metadata=optional(metadata),
    analysis=optional(analysis),
    conversation_initiation_client_data=optional(initiation),
    has_audio=optional(st.booleans()),
)
events = st.one_of(
    obj(type=st.just("post_call_transcription"), event_timestamp=optional(st.integers(0, 2**31)), data=transcription),
    obj(
        type=st.just("post_call_audio"),
        event_timestamp=optional(st.integers()),
        data=obj(agent_id=optional(text), conversation_id=optional(text), full_audio=optional(st.just("SUQzBAAAAAAA"))),
    ),
    obj(
        type=st.just("call_initiation_failure"),
        data=obj(
            failure_reason=optional(st.sampled_from(["busy", "no-answer", "unknown"])),
            metadata=optional(st.just({"type": "sip", "body": {}})),
        ),
    ),
    obj(
        type=st.from_regex(r"[a-z_]{1,30}", fullmatch=True),
        event_timestamp=optional(st.integers()),
        data=optional(st.just({"x": 1})),
    ),
)


@pytest.mark.slow(seconds=4)
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(event=events)
def test_a_correctly_signed_event_never_gets_a_4xx_or_5xx(server: LiveServer, event: dict[str, Any]) -> None:
    body = json.dumps(event).encode()
    response = server.client.post(
        "/webhook/post-call",
        content=body,
        headers={"content-type": "application/json", "elevenlabs-signature": elevenlabs_signature(body)},
    )
    assert response.status_code == 200, (response.status_code, response.text, event)
    assert response.json()["status"] in {"held", "duplicate", "ignored"}


def audio_chunks(size_mb: int) -> Iterator[bytes]:
    """A post_call_audio event of `size_mb` MiB, as ElevenLabs streams it (type first, then the base64 audio)."""
    yield b'{"type":"post_call_audio","event_timestamp":1739537319,'
    yield b'"data":{"agent_id":"agent_x","conversation_id":"conv_big","full_audio":"'
    block = b"SUQzBAAAAAAA" * (MB // 12)
    for _ in range(size_mb):
        yield block
    yield b'"}}'


@pytest.mark.slow(seconds=2)
def test_a_50_mb_audio_event_is_streamed_answered_200_and_memory_stays_flat(server: LiveServer) -> None:
    before = rss(server)
    stamp = int(time.time())
    mac = hmac.new(ELEVENLABS_SECRET.encode(), f"{stamp}.".encode(), hashlib.sha256)
    size = 0
    for chunk in audio_chunks(50):
        mac.update(chunk)
        size += len(chunk)
    assert size > 50 * 1000 * 1000
    header = f"t={stamp},v0={mac.hexdigest()}"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(2):
            response = client.post(
                "/webhook/post-call", content=audio_chunks(50), headers={"elevenlabs-signature": header}
            )
            assert response.status_code == 200, response.text
            assert response.json() == {"status": "ignored", "type": "post_call_audio"}
        # The same body with one byte changed is refused: the signature covers every streamed byte.
        tampered = (c.replace(b"SUQz", b"SUQy", 1) if c.startswith(b"SUQz") else c for c in audio_chunks(50))
        refused = client.post("/webhook/post-call", content=tampered, headers={"elevenlabs-signature": header})
        assert refused.status_code == 401
    grown = rss(server) - before
    assert grown <= 20 * MB, f"RSS grew by {grown / MB:.1f} MB"
    # Since the server started, the fuzz's events included (the module's tests share the server).
    grown = rss(server) - server.baseline_rss  # type: ignore[attr-defined]
    assert grown <= 20 * MB, f"RSS grew by {grown / MB:.1f} MB since the start"
    assert server.wait_for(lambda: caught_up(server), timeout=10)
