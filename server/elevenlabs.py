"""ElevenLabs payloads as msgspec Structs: what it sends us and what we answer (SPEC §6).

Requests are decoded leniently (unknown keys ignored, every field optional, wrong types tolerated
where ElevenLabs is known to vary) because a call must never fail on a payload detail.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import msgspec

from server.records import Scalar


class PersonalizeRequest(msgspec.Struct, kw_only=True):
    """The conversation-initiation webhook body. SIP adds `call_id` and `sip_headers`; both ignored."""

    caller_id: str | None = None
    agent_id: str | None = None
    called_number: str | None = None
    call_sid: str | None = None
    conversation_id: str | None = None


class PromptOverride(msgspec.Struct):
    prompt: str


class AgentOverride(msgspec.Struct, omit_defaults=True):
    prompt: PromptOverride | None = None
    first_message: str | None = None
    language: str | None = None


class TtsOverride(msgspec.Struct):
    voice_id: str


class ConfigOverride(msgspec.Struct, omit_defaults=True):
    agent: AgentOverride | None = None
    tts: TtsOverride | None = None


class Personalization(msgspec.Struct, omit_defaults=True, tag_field="type", tag="conversation_initiation_client_data"):
    """The personalize answer. The tag makes `type` always present (omit_defaults would drop it)."""

    dynamic_variables: dict[str, Scalar]
    conversation_config_override: ConfigOverride | None = None


class ToolRemember(msgspec.Struct, kw_only=True):
    """The `remember` tool body; identity fields are bound to system variables in the tool config."""

    fact: str | None = None
    caller_id: str | None = None
    called_number: str | None = None
    conversation_id: str | None = None
    call_sid: str | None = None
    category: str | None = None


class ToolAnswer(msgspec.Struct):
    """What the agent hears back from a tool: a status and a short sentence it can say."""

    status: str
    message: str


class PhoneCall(msgspec.Struct, kw_only=True):
    external_number: str | None = None
    agent_number: str | None = None
    call_sid: str | None = None
    direction: str | None = None


class CallMetadata(msgspec.Struct, kw_only=True):
    phone_call: PhoneCall | None = None
    start_time_unix_secs: int | None = None


class DataCollectionResult(msgspec.Struct, kw_only=True):
    value: Any = None


class Analysis(msgspec.Struct, kw_only=True):
    transcript_summary: str | None = None
    data_collection_results: dict[str, DataCollectionResult] = {}


class InitiationData(msgspec.Struct, kw_only=True):
    dynamic_variables: dict[str, Any] = {}


class PostCallData(msgspec.Struct, kw_only=True):
    conversation_id: str | None = None
    agent_id: str | None = None
    metadata: CallMetadata | None = None
    analysis: Analysis | None = None
    conversation_initiation_client_data: InitiationData | None = None


class PostCallEvent(msgspec.Struct, kw_only=True):
    """A post-call webhook: `post_call_transcription`, `post_call_audio` or `call_initiation_failure`."""

    type: str
    event_timestamp: int | float | str | None = None
    data: PostCallData | None = None


SIGNATURE_TOLERANCE_SECONDS = 30 * 60


def verify_signature(header: str | None, body: bytes, secret: str, now: float | None = None) -> bool:
    """Check `ElevenLabs-Signature: t=<unix>,v0=<hex hmac_sha256(secret, "<t>.<body>")>`.

    Compares in constant time over the raw bytes; refuses timestamps older than 30 minutes.
    """
    if not header:
        return False
    parts = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    stamp, given = parts.get("t", ""), parts.get("v0")
    # isdigit() alone accepts '²' and other non-ASCII digits; the MAC must be ASCII to be compared.
    if not (stamp.isascii() and stamp.isdigit()) or given is None or not given.isascii():
        return False
    current = time.time() if now is None else now
    if int(stamp) < current - SIGNATURE_TOLERANCE_SECONDS or int(stamp) > current + SIGNATURE_TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)
