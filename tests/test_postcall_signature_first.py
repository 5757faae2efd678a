"""The post-call webhook refuses what cannot be signed before it reads a byte of the body.

Over HTTP against the real server: a request whose `ElevenLabs-Signature` is missing, malformed,
absurdly long or out of tolerance gets 401 while most of its declared 8 MB body is still unsent,
and no header value, however hostile, makes it answer 5xx.
"""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from server import elevenlabs
from server.elevenlabs import SIGNATURE_TOLERANCE_SECONDS
from tests.conftest import ELEVENLABS_SECRET, LiveServer, elevenlabs_signature, running_server

DECLARED = 8 * 1024 * 1024 - 1  # just under the route's body limit: only the signature can refuse it
MAC = "0" * 64
# `{now}` is the time of the request: a module-level clock would drift out of tolerance in a long run.
UNSIGNABLE = {
    "no header": None,
    "empty": "",
    "not a signature": "hello",
    "no MAC": "t={now}",
    "no timestamp": f"v0={MAC}",
    "MAC not hex": f"t={{now}},v0={'z' * 64}",
    "MAC truncated": f"t={{now}},v0={MAC[:-1]}",
    "timestamp of 5,000 digits": "t=" + "9" * 5_000 + f",v0={MAC}",
    "timestamp in another script": f"t=\u0661\u0662\u0663,v0={MAC}",
    "stale timestamp": f"t={{stale}},v0={MAC}",
    "future timestamp": f"t={{future}},v0={MAC}",
    "header of 6 kB": f"t={{now}},v0={MAC}," + "x=" * 3_000,
}


def _at_now(template: str | None) -> str | None:
    if template is None:
        return None
    now = int(time.time())
    margin = SIGNATURE_TOLERANCE_SECONDS + 60
    return (
        template.replace("{now}", str(now)).replace("{stale}", str(now - margin)).replace("{future}", str(now + margin))
    )


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory) -> LiveServer:  # type: ignore[no-untyped-def]
    with running_server(tmp_path_factory.mktemp("signature")) as server:
        yield server


def _head(signature: str | None) -> bytes:
    head = (
        "POST /webhook/post-call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {DECLARED}\r\n"
    )
    if signature is not None:
        head += f"ElevenLabs-Signature: {signature}\r\n"
    return head.encode() + b"\r\n"


@pytest.mark.parametrize("case", list(UNSIGNABLE))
def test_an_unsignable_request_is_refused_before_its_body_is_read(signed_server: LiveServer, case: str) -> None:
    with socket.create_connection(("127.0.0.1", signed_server.port), timeout=5) as sock:
        sock.sendall(_head(_at_now(UNSIGNABLE[case])) + b'{"type": "post_call_transcription", "data": {' + b" " * 4_000)
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        waited = time.monotonic() - started
    # The answer comes while 8 MB are still unsent: the server never waited for the body.
    assert reply.startswith(b"HTTP/1.1 401"), (case, reply[:300])
    assert b"connection: close" in reply.lower(), reply[:300]
    assert waited < 2, f"the server waited {waited:.1f} s for a body it should not read"
    # The server is fine afterwards, and a correctly signed delivery of a no-op event still works.
    body = b'{"type": "some_future_event", "data": null}'
    response = signed_server.client.post(
        "/webhook/post-call", content=body, headers={"ElevenLabs-Signature": elevenlabs_signature(body)}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ignored", "type": "some_future_event"}


def test_a_hundred_unsigned_8_mb_requests_leave_memory_flat(signed_server: LiveServer) -> None:
    def rss_kb() -> int:
        assert signed_server.proc is not None
        with open(f"/proc/{signed_server.proc.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    before = rss_kb()
    sockets = []
    try:
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", signed_server.port), timeout=5)
            sockets.append(sock)
            sock.sendall(_head(None) + b"x" * 64_000)
        for sock in sockets:
            assert sock.recv(4096).startswith(b"HTTP/1.1 401")
    finally:
        for sock in sockets:
            sock.close()
    assert rss_kb() - before < 30_000, "unsigned bodies were held in memory"


HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=400
).map(str.strip)
SHAPED = st.builds(
    lambda stamp, mac, extra: f"t={stamp},v0={mac}{extra}",
    st.one_of(st.integers(-(10**30), 10**30).map(str), st.text("0123456789", max_size=5_000), HEADER_TEXT),
    st.one_of(st.text("0123456789abcdefABCDEF", max_size=80), HEADER_TEXT),
    st.one_of(st.just(""), HEADER_TEXT.map(lambda t: "," + t)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=st.one_of(HEADER_TEXT, SHAPED))
@example(header="t=" + "9" * 5_000 + ",v0=" + MAC)
@example(header="t=" + "1" * 40 + ",v0=" + MAC)
@example(header="t=\u00b2,v0=" + MAC)
def test_no_signature_header_makes_the_server_answer_5xx(signed_server: LiveServer, header: str) -> None:
    body = b'{"type": "post_call_transcription", "data": {"conversation_id": "conv_1"}}'
    response = signed_server.client.post(
        "/webhook/post-call", content=body, headers=[(b"elevenlabs-signature", header.encode("latin-1"))]
    )
    assert response.status_code == 401, (header[:200], response.status_code, response.text[:300])
    assert response.json()["status_code"] == 401


def test_a_correct_signature_is_still_accepted_at_the_edges_of_its_format() -> None:
    body = b"{}"
    header = elevenlabs_signature(body, ELEVENLABS_SECRET)
    signature = elevenlabs.parse_signature(f" {header.replace(',', ' , ')} ")
    assert signature is not None and signature.matches(body, ELEVENLABS_SECRET)
    assert not signature.matches(body + b" ", ELEVENLABS_SECRET)
