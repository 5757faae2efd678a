"""`verify_signature`: the ElevenLabs-Signature check of post-call webhooks (SPEC §6), as a pure function.

The end-to-end refusals over HTTP are in test_app_postcall.py; here "now" is frozen, as the
reference test vector requires.
"""

from __future__ import annotations

import json

import pytest

from server.elevenlabs import SIGNATURE_TOLERANCE_SECONDS, verify_signature
from tests.conftest import ELEVENLABS_SECRET, FIXTURES, elevenlabs_signature, fixture_json

VECTOR = fixture_json("signature_vector.json")
BODY = (FIXTURES / VECTOR["body_file"]).read_bytes()
STAMP = VECTOR["timestamp"]
HEADER = VECTOR["header"]


def test_the_vector_is_what_the_fixtures_say() -> None:
    assert VECTOR["secret"] == ELEVENLABS_SECRET
    assert len(BODY) == 146
    assert elevenlabs_signature(BODY, ELEVENLABS_SECRET, STAMP) == HEADER


@pytest.mark.parametrize("offset", [0, 1, 60, SIGNATURE_TOLERANCE_SECONDS - 1, SIGNATURE_TOLERANCE_SECONDS, -60])
def test_the_vector_verifies_with_now_frozen_near_its_timestamp(offset: int) -> None:
    assert SIGNATURE_TOLERANCE_SECONDS == 30 * 60
    assert verify_signature(HEADER, BODY, ELEVENLABS_SECRET, now=STAMP + offset) is True


def test_the_vector_is_stale_past_thirty_minutes_and_by_the_real_clock() -> None:
    assert verify_signature(HEADER, BODY, ELEVENLABS_SECRET, now=STAMP + SIGNATURE_TOLERANCE_SECONDS + 1) is False
    assert verify_signature(HEADER, BODY, ELEVENLABS_SECRET, now=STAMP + 86_400) is False
    # The vector is from February 2025: without a frozen clock it is long past its tolerance.
    assert verify_signature(HEADER, BODY, ELEVENLABS_SECRET) is False


def test_a_timestamp_far_in_the_future_is_refused() -> None:
    future = STAMP + SIGNATURE_TOLERANCE_SECONDS + 60
    assert verify_signature(elevenlabs_signature(BODY, timestamp=future), BODY, ELEVENLABS_SECRET, now=STAMP) is False


def _changed_byte(body: bytes) -> bytes:
    at = body.index(b"conv_test") + len(b"conv_tes")
    return body[:at] + b"T" + body[at + 1 :]


REFUSED = {
    "no header": (None, BODY, ELEVENLABS_SECRET),
    "empty header": ("", BODY, ELEVENLABS_SECRET),
    "no v0": (f"t={STAMP}", BODY, ELEVENLABS_SECRET),
    "another scheme": (HEADER.replace("v0=", "v1="), BODY, ELEVENLABS_SECRET),
    "no timestamp": (HEADER.split(",", 1)[1], BODY, ELEVENLABS_SECRET),
    "timestamp not a number": (HEADER.replace(f"t={STAMP}", "t=soon"), BODY, ELEVENLABS_SECRET),
    "timestamp changed": (HEADER.replace(f"t={STAMP}", f"t={STAMP + 1}"), BODY, ELEVENLABS_SECRET),
    "hash truncated": (HEADER[:-1], BODY, ELEVENLABS_SECRET),
    "one body byte changed": (HEADER, _changed_byte(BODY), ELEVENLABS_SECRET),
    "body with a trailing newline": (HEADER, BODY + b"\n", ELEVENLABS_SECRET),
    "wrong secret": (HEADER, BODY, "wsec_test_secret_124"),
    "re-serialised JSON": (HEADER, json.dumps(json.loads(BODY)).encode(), ELEVENLABS_SECRET),
    "re-serialised JSON, indented": (HEADER, json.dumps(json.loads(BODY), indent=2).encode(), ELEVENLABS_SECRET),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_anything_but_the_exact_signature_over_the_raw_bytes_is_refused(case: str) -> None:
    header, body, secret = REFUSED[case]
    assert body != BODY or header != HEADER or secret != ELEVENLABS_SECRET
    assert verify_signature(header, body, secret, now=STAMP + 10) is False


@pytest.mark.parametrize("header", ["t=\u00b2,v0=00", f"t={STAMP},v0=\u00e9"])
def test_a_header_with_non_ascii_characters_is_refused_not_raised(header: str) -> None:
    assert verify_signature(header, BODY, ELEVENLABS_SECRET, now=STAMP) is False
