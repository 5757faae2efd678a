"""What a custom LLM is told about the caller (`custom_llm_extra_body`): a key and a flag, never a number.

Optional (`CUSTOM_LLM_EXTRA_BODY`). The composed answer stays as `compose` made it and as the answer
cache holds it; the extra body, which differs per caller even among new callers, is added to the
encoded bytes afterwards, so a call costs one small encode more and no cache entry per new caller.
"""

from __future__ import annotations

import msgspec

from server.elevenlabs import CustomLlmExtraBody

_encoder = msgspec.json.Encoder()
_FIELD = b',"custom_llm_extra_body":'
UNKNOWN = CustomLlmExtraBody(caller_known=False)


def extra_body(key: str | None, known: bool, tenant: str | None = None) -> CustomLlmExtraBody:
    """The extra body for a caller: their key (None when withheld), whether the answer knew them, their tenant."""
    return CustomLlmExtraBody(caller_known=known and key is not None, caller_key=key, tenant=tenant)


def with_extra_body(answer: bytes, extra: CustomLlmExtraBody) -> bytes:
    """An encoded answer (a JSON object) with `custom_llm_extra_body` added as its last member."""
    if not answer.endswith(b"}"):
        raise ValueError("not an encoded JSON object")
    # One copy of the answer (a few kB with a long soul), not one per concatenation.
    return b"".join((memoryview(answer)[:-1], _FIELD, _encoder.encode(extra), b"}"))
