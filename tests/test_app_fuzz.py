"""Hostile HTTP input against the real server: never a 5xx, and personalize always answers 200.

Property-based fuzzing of the personalize body (random JSON, wrong types, huge strings, deep
nesting, invalid UTF-8), oversized bodies refused before they are read, and `{caller}` values that
try to reach outside the vault.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MARIA, LiveServer, git, running_server
from tests.live_helpers import BUILTIN_VARIABLES

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
# Every generated body stays under the webhook's 64 KB limit; larger ones are tested separately.
FIELDS = ("caller_id", "agent_id", "called_number", "call_sid", "conversation_id")
BODIES = st.one_of(
    st.binary(max_size=300),  # includes invalid UTF-8
    JSON.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries({"caller_id": st.text(max_size=8_000)}).map(lambda d: json.dumps(d).encode()),
    st.integers(1, 20_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 4_000).map(lambda depth: b'{"caller_id":' * depth + b"1" + b"}" * depth),
)


def assert_valid_answer(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "conversation_initiation_client_data"
    variables = body["dynamic_variables"]
    assert set(BUILTIN_VARIABLES) <= set(variables)
    for key, value in variables.items():
        assert isinstance(value, str | int | float | bool) and value is not None, key
        assert not key.startswith("system__")
    assert variables["caller_known"] is False


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory) -> LiveServer:  # type: ignore[no-untyped-def]
    with running_server(tmp_path_factory.mktemp("fuzz")) as server:
        yield server


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=BODIES)
def test_personalize_always_answers_200_with_a_valid_body(fuzz_server: LiveServer, body: bytes) -> None:
    assert_valid_answer(fuzz_server.personalize(body))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(
        ["/tools/remember", "/tools/recall", "/webhook/post-call", "/api/notes", f"/api/memory/{MARIA}"]
    ),
    body=BODIES,
)
def test_other_routes_never_answer_5xx(fuzz_server: LiveServer, path: str, body: bytes) -> None:
    for headers in ({}, {"Authorization": "Bearer test-admin-key"}, {"Authorization": "Bearer test-webhook-secret"}):
        response = fuzz_server.client.post(path, content=body, headers=headers)
        assert response.status_code < 500, (path, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json")


def test_oversized_body_is_refused_without_being_read(fuzz_server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /webhook/personalize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer test-webhook-secret\r\n"
            b"Content-Length: 1000000000\r\n\r\n" + b"{" * 1000
        )
        started = time.monotonic()
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert time.monotonic() - started < 2, "the server waited for a gigabyte it should never read"
    big = fuzz_server.personalize(b'{"caller_id": "' + b"1" * 200_000 + b'"}')
    assert big.status_code == 413 and "detail" in big.json()


@pytest.mark.parametrize(
    "caller",
    ["..%2F..%2Fsoul", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "..%2Fsoul.md", "callers%2F..%2F..%2Fx", "%00", "a" * 64],
)
def test_caller_values_cannot_reach_outside_the_vault(fuzz_server: LiveServer, caller: str) -> None:
    before = sorted(p.name for p in fuzz_server.vault.parent.iterdir())
    headers = {"Authorization": "Bearer test-admin-key"}
    for method, path, body in (
        ("GET", f"/api/callers/{caller}", None),
        ("GET", f"/api/callers/{caller}/preview", None),
        ("DELETE", f"/api/callers/{caller}", None),
        ("POST", f"/api/memory/{caller}", {"fact": "escape"}),
        ("POST", "/api/notes", {"note": "escape", "phone_hash": caller}),
    ):
        response = fuzz_server.client.request(method, path, json=body, headers=headers)
        assert response.status_code == 404, (method, path, response.text)
    assert sorted(p.name for p in fuzz_server.vault.parent.iterdir()) == before
    assert git(fuzz_server.vault, "status", "--porcelain") == ""
    assert "escape" not in "".join(p.read_text(errors="replace") for p in Path(fuzz_server.vault).rglob("*.md"))
