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
# `t=<10 digits>,v0=<64 hex>` is 80 characters; anything much longer is not a signature, and no
# piece of the header is worked on before its length is known to be small.
SIGNATURE_HEADER_MAX_CHARS = 256
_STAMP_MAX_DIGITS = 12  # unix seconds until the year 33658
_MAC_HEX_DIGITS = 64  # hex of an HMAC-SHA256
_ASCII_DIGITS = frozenset("0123456789")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class Signature(msgspec.Struct, frozen=True):
    """A well-formed, timely `ElevenLabs-Signature` header: its timestamp as sent and its MAC."""

    stamp: str
    mac: str

    def matches(self, body: bytes, secret: str) -> bool:
        """Whether the MAC is `hmac_sha256(secret, "<t>.<body>")`, compared in constant time."""
        expected = hmac.new(secret.encode(), self.stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.mac)


def parse_signature(header: str | None, now: float | None = None) -> Signature | None:
    """The header's timestamp and MAC, or None if it cannot belong to a valid request.

    Checked before the body is read: missing, too long, not `t=<digits>,v0=<64 hex>`, or a timestamp
    more than 30 minutes from now. Bounded work, whatever the header holds; never raises.
    """
    if not header or len(header) > SIGNATURE_HEADER_MAX_CHARS:
        return None
    stamp = mac = None
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep and name == "t":
            stamp = value
        elif sep and name == "v0":
            mac = value
    # str.isdigit() accepts '²' and other scripts' digits, and int() of a long string is costly
    # or refused: ASCII digits only, a dozen at most.
    if stamp is None or not 0 < len(stamp) <= _STAMP_MAX_DIGITS or not _ASCII_DIGITS.issuperset(stamp):
        return None
    if mac is None or len(mac) != _MAC_HEX_DIGITS or not _HEX_DIGITS.issuperset(mac):
        return None
    current = time.time() if now is None else now
    if abs(int(stamp) - current) > SIGNATURE_TOLERANCE_SECONDS:
        return None
    return Signature(stamp, mac)


def verify_signature(header: str | None, body: bytes, secret: str, now: float | None = None) -> bool:
    """Check `ElevenLabs-Signature: t=<unix>,v0=<hex hmac_sha256(secret, "<t>.<body>")>`.

    Compares in constant time over the raw bytes; refuses timestamps more than 30 minutes away.
    """
    signature = parse_signature(header, now)
    return signature is not None and signature.matches(body, secret)
