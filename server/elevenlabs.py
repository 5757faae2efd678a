"""ElevenLabs payloads as msgspec Structs: what it sends us and what we answer (SPEC §6).

Requests are decoded leniently (unknown keys ignored, every field optional, wrong types tolerated
where ElevenLabs is known to vary) because a call must never fail on a payload detail.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import re
import time
from typing import Any

import msgspec

from server.newfacts import DATA_COLLECTION_ID, MAX_HELD_FACTS, new_facts
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
    user_id: str | None = None  # the caller key (SPEC §13); absent for a withheld caller


class CustomLlmExtraBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`custom_llm_extra_body` of the answer: ElevenLabs hands it to a custom LLM as `elevenlabs_extra_body`.

    Who is calling, as a key the admin API takes (`/api/callers/{caller_key}`), never as a number.
    """

    caller_known: bool
    caller_key: str | None = None  # absent for withheld and non-phone callers
    tenant: str | None = None  # the tenant's name once tenants route calls (SPEC §12); absent with one vault


class ToolRemember(msgspec.Struct, kw_only=True):
    """The `remember` tool body; identity fields are bound to system variables in the tool config."""

    fact: str | None = None
    caller_id: str | None = None
    called_number: str | None = None
    agent_id: str | None = None  # bound to system__agent_id: picks the tenant (SPEC §12)
    conversation_id: str | None = None
    call_sid: str | None = None
    category: str | None = None


class ToolRecall(msgspec.Struct, kw_only=True):
    """The `recall` tool body (SPEC §16): a short query; identity fields bound to system variables."""

    query: str | None = None
    caller_id: str | None = None
    called_number: str | None = None
    agent_id: str | None = None
    conversation_id: str | None = None
    call_sid: str | None = None


class RecallStatus(enum.Enum):
    """Whether `recall` found any of the caller's lines."""

    FOUND = "found"
    NOTHING = "nothing"


class RecallAnswer(msgspec.Struct):
    """What the agent hears back from `recall`: the matching lines, one per line (empty when nothing matched)."""

    status: RecallStatus
    answer: str


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
    start_time_unix_secs: int | float | None = None


class DataCollectionResult(msgspec.Struct, kw_only=True):
    value: Any = None


# The SDK declares these optional, and they arrive as `null` (SPEC §13): every optional field may.
class Analysis(msgspec.Struct, kw_only=True):
    transcript_summary: str | None = None
    data_collection_results: dict[str, DataCollectionResult | None] | None = None


class InitiationData(msgspec.Struct, kw_only=True):
    dynamic_variables: dict[str, Any] | None = None


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


class PayloadError(ValueError):
    """A payload that cannot be acted on; the message is safe to send back."""


# A conversation id is written into the caller's file and the commit message: one plain token only.
_CONVERSATION_ID = re.compile(r"[A-Za-z0-9_\-]{1,200}")


class FinishedCall(msgspec.Struct, frozen=True, kw_only=True):
    """What a `post_call_transcription` event says about the call, in the terms memory writes."""

    conversation_id: str
    external_number: str | None  # the other party, from Twilio's call data
    initiation_caller_id: object  # `system__caller_id` as the call started, the fallback
    initiation_called_number: object
    call_sid: str | None
    started: dt.datetime | None  # None: not given, or no calendar holds it
    summary: str
    fills: dict[str, str]  # data-collection results that may fill frontmatter keys
    new_facts: tuple[str, ...] = ()  # the `new_facts` data collection, clean; not yet checked against the file
    agent_id: str | None = None  # which agent took the call: it picks the tenant (SPEC §12)
    agent_number: str | None = None  # our own number on the call, whichever way it went
    outbound: bool = False  # Twilio's data says we placed the call


def finished_call(data: PostCallData) -> FinishedCall:
    """Interpret a transcription event's data; raises PayloadError when it names no conversation."""
    if not data.conversation_id:
        raise PayloadError("the event has no conversation_id")
    if not _CONVERSATION_ID.fullmatch(data.conversation_id):
        raise PayloadError("the event's conversation_id is not a conversation id")
    call = data.metadata.phone_call if data.metadata else None
    initiation = data.conversation_initiation_client_data
    variables = (initiation.dynamic_variables if initiation else None) or {}
    call_sid = (call.call_sid if call else None) or variables.get("system__call_sid")
    stamp = data.metadata.start_time_unix_secs if data.metadata else None
    try:
        started = dt.datetime.fromtimestamp(stamp, dt.UTC) if stamp else None
    except (ValueError, OverflowError, OSError):  # a start time no calendar holds (or NaN)
        started = None
    analysis = data.analysis
    collected = dict((analysis.data_collection_results if analysis else None) or {})
    facts = collected.pop(DATA_COLLECTION_ID, None)
    return FinishedCall(
        conversation_id=data.conversation_id,
        external_number=call.external_number if call else None,
        initiation_caller_id=variables.get("system__caller_id"),
        initiation_called_number=variables.get("system__called_number"),
        call_sid=call_sid if isinstance(call_sid, str) else None,
        started=started,
        summary=(analysis.transcript_summary if analysis else None) or "",
        fills={
            name: str(result.value)
            for name, result in collected.items()
            if result is not None and isinstance(result.value, str | int | float) and not isinstance(result.value, bool)
        },
        new_facts=tuple(new_facts(facts.value, limit=MAX_HELD_FACTS)) if facts is not None else (),
        agent_id=data.agent_id,
        agent_number=call.agent_number if call else None,
        outbound=bool(call and isinstance(call.direction, str) and call.direction.lower().startswith("outbound")),
    )


_personalize_decoder = msgspec.json.Decoder(PersonalizeRequest)


def parse_personalize(body: bytes) -> PersonalizeRequest:
    """Decode the personalize body, salvaging string fields from any JSON object; never raises."""
    try:
        return _personalize_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return PersonalizeRequest()
    if not isinstance(raw, dict):
        return PersonalizeRequest()
    fields = PersonalizeRequest.__struct_fields__
    return PersonalizeRequest(**{k: v for k, v in raw.items() if k in fields and isinstance(v, str)})


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
        running = self.start(secret)
        running.update(body)
        return self.finish(running)

    def start(self, secret: str) -> hmac.HMAC:
        """An HMAC to feed the body to as it streams in, chunk by chunk (`finish` compares it)."""
        return hmac.new(secret.encode(), self.stamp.encode() + b".", hashlib.sha256)

    def finish(self, running: hmac.HMAC) -> bool:
        """Whether the streamed body's HMAC is this signature's MAC, compared in constant time."""
        return hmac.compare_digest(running.hexdigest(), self.mac)


# The envelope's `type`, looked for in the first bytes of a body too large to keep: ElevenLabs puts it first.
_TYPE_FIELD = re.compile(rb'"type"\s*:\s*"([A-Za-z0-9_.\-]{1,64})"')


def sniff_type(head: bytes) -> str | None:
    """The event type named by the first `"type"` key in the first bytes of a body, if any."""
    found = _TYPE_FIELD.search(head)
    return found.group(1).decode() if found else None


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
