"""Phone numbers: turning a caller ID into a caller key, and nothing else (SPEC §6, §7).

A caller ID is either a usable phone number, normalised to E.164 and keyed with
HMAC-SHA256(PHONE_HASH_KEY, e164), or it is not (withheld, a SIP/client address, junk), in which
case it has no key at all: withheld callers must never share one memory.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from typing import Literal

import msgspec
import phonenumbers

# Keypad spellings Twilio uses for withheld caller IDs: ANONYMOUS, RESTRICTED, UNAVAILABLE,
# BLOCKED, UNKNOWN, PRIVATE, WITHHELD (reference/elevenlabs.md §7).
_SENTINEL_DIGITS = frozenset({"266696687", "7378742833", "86282452253", "2562533", "8656696", "7748283", "94844353"})
_WITHHELD_WORDS = ("anonymous", "restricted", "unknown", "unavailable", "private", "blocked", "withheld")
_SEPARATORS = re.compile(r"[\s\-.()/]")
_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")

Kind = Literal["phone", "withheld", "non_phone", "unparseable"]


class CallerId(msgspec.Struct, frozen=True):
    """What a raw caller ID turned out to be. `e164` is set only for kind == "phone"."""

    kind: Kind
    e164: str | None = None

    @property
    def usable(self) -> bool:
        """Whether this caller ID may be given a memory."""
        return self.kind == "phone"


WITHHELD = CallerId("withheld")
# No phone number is longer, in any format: a longer caller ID is junk, and never parsed.
MAX_CHARS = 64


def classify(raw: object, default_region: str | None = None) -> CallerId:
    """Classify a caller ID and normalise it to E.164 when it is a real phone number.

    `default_region` is used for national formats such as `(415) 555-0123`. Not cached here: the
    call path remembers whole identities (`Memory.identify`).
    """
    if not isinstance(raw, str):
        return WITHHELD
    if len(raw) > MAX_CHARS:
        return CallerId("unparseable")
    text = raw.strip()
    lowered = text.lower()
    if not text or lowered in {"null", "none"}:
        return WITHHELD
    if lowered.startswith(("client:", "sip:", "sips:")):
        return CallerId("non_phone")
    if any(word in lowered for word in _WITHHELD_WORDS):
        return WITHHELD
    compact = _SEPARATORS.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    digits = compact.removeprefix("+")
    if digits in _SENTINEL_DIGITS or (digits.startswith("1") and digits[1:] in _SENTINEL_DIGITS):
        return WITHHELD
    try:
        parsed = phonenumbers.parse(compact, None if compact.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return CallerId("unparseable")
    # A possible number (right length for its region) is enough: test and fictional ranges are
    # "invalid" to phonenumbers but are real enough to the people who call from them.
    if not phonenumbers.is_possible_number(parsed):
        return CallerId("unparseable")
    return CallerId("phone", phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def region_of(number: object) -> str | None:
    """The region of an E.164 number (e.g. our own Twilio number), used for national caller IDs."""
    if not isinstance(number, str) or not number.strip().startswith("+") or len(number) > MAX_CHARS:
        return None
    return _region_of(number)


@functools.lru_cache(maxsize=1024)
def _region_of(number: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number.strip(), None)) or None
    except phonenumbers.NumberParseException:
        return None


def caller_key(e164: str, key: bytes) -> str:
    """The caller's identity in the vault: HMAC-SHA256 of the E.164 number, as 64 hex digits."""
    return hmac.digest(key, e164.encode(), "sha256").hex()


def legacy_key(e164: str) -> str:
    """The predecessor's plain SHA-256 key, kept only to recognise imported callers (SPEC §7)."""
    return hashlib.sha256(e164.encode()).hexdigest()


def is_caller_key(text: str) -> bool:
    """Whether `text` looks like a caller key (64 lowercase hex digits)."""
    return bool(_HEX_KEY.fullmatch(text))


def short(key: str) -> str:
    """The 12-hex-digit prefix used in file names, commit messages and logs."""
    return key[:12]
