"""phone.py: caller IDs to E.164 and caller keys (SPEC §6 withheld callers, §7 keys)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from server import phone
from tests.conftest import fixture_json

KEY = b"test-phone-hash-key-0123456789"


@pytest.mark.parametrize("raw", fixture_json("withheld_caller_ids.json"))
def test_every_withheld_fixture_is_not_usable(raw: str) -> None:
    for region in (None, "US", "GB"):
        parsed = phone.classify(raw, region)
        assert not parsed.usable, (raw, region, parsed)
        assert parsed.e164 is None


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("anonymous", "withheld"),
        ("ANONYMOUS", "withheld"),
        ("  Restricted  ", "withheld"),
        ("unavailable", "withheld"),
        ("Unknown", "withheld"),
        ("private", "withheld"),
        ("blocked", "withheld"),
        ("WITHHELD", "withheld"),
        ("+266696687", "withheld"),
        ("266696687", "withheld"),
        ("+1266696687", "withheld"),
        ("+1 266 696 687", "withheld"),
        ("+7378742833", "withheld"),
        ("+86282452253", "withheld"),
        ("+8656696", "withheld"),
        ("+2562533", "withheld"),
        ("+7748283", "withheld"),
        ("+94844353", "withheld"),
        ("", "withheld"),
        ("   ", "withheld"),
        ("null", "withheld"),
        ("None", "withheld"),
        ("client:alice", "non_phone"),
        ("CLIENT:alice", "non_phone"),
        ("sip:bob@example.com", "non_phone"),
        ("sips:bob@example.com", "non_phone"),
        ("+1234", "unparseable"),
        ("hello there", "unparseable"),
        ("++--", "unparseable"),
    ],
)
def test_classify_kinds(raw: str, kind: str) -> None:
    parsed = phone.classify(raw, "US")
    assert parsed.kind == kind
    assert parsed.e164 is None
    assert not parsed.usable


@pytest.mark.parametrize("raw", [None, 14155550123, b"+14155550123", ["+14155550123"], {"n": 1}])
def test_non_string_caller_ids_are_withheld(raw: object) -> None:
    assert phone.classify(raw, "US") == phone.WITHHELD
    assert not phone.classify(raw, "US").usable


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+14155550123", None, "+14155550123"),
        ("+44 20 7183 8750", None, "+442071838750"),
        ("+44 20 7183 8750", "US", "+442071838750"),  # an international number ignores the region
        ("004915112345678", None, "+4915112345678"),
        ("00 49 151 1234 5678", None, "+4915112345678"),
        ("(415) 555-0123", "US", "+14155550123"),
        ("415.555.0123", "US", "+14155550123"),
        ("415-555-0123", "US", "+14155550123"),
        ("020 7183 8750", "GB", "+442071838750"),
        ("  +1 (415) 555-0123  ", None, "+14155550123"),
    ],
)
def test_normalisation_table(raw: str, region: str | None, e164: str) -> None:
    parsed = phone.classify(raw, region)
    assert parsed.kind == "phone"
    assert parsed.usable
    assert parsed.e164 == e164


def test_national_format_needs_a_region() -> None:
    assert not phone.classify("(415) 555-0123", None).usable
    # The same digits mean a different number in another region, so the region really decides.
    gb = phone.classify("020 7183 8750", "GB")
    assert gb.e164 == "+442071838750"
    assert phone.classify("020 7183 8750", "US").e164 != "+442071838750"


def test_region_of() -> None:
    assert phone.region_of("+14155550199") == "US"
    assert phone.region_of("+442071838750") == "GB"
    assert phone.region_of(" +4915112345678 ") == "DE"
    assert phone.region_of("4155550199") is None  # not E.164
    assert phone.region_of("") is None
    assert phone.region_of(None) is None
    assert phone.region_of("+") is None


def test_region_of_called_number_normalises_national_caller() -> None:
    region = phone.region_of("+14155550199")
    assert phone.classify("(415) 555-0123", region).e164 == "+14155550123"


def test_caller_key_is_hmac_sha256_hex() -> None:
    e164 = "+14155550123"
    expected = hmac.new(KEY, e164.encode(), hashlib.sha256).hexdigest()
    key = phone.caller_key(e164, KEY)
    assert key == expected
    assert len(key) == 64
    assert phone.is_caller_key(key)
    # Not the plain hash: a keyed hash cannot be reversed by hashing every number.
    assert key != hashlib.sha256(e164.encode()).hexdigest()


def test_caller_key_differs_per_key_and_per_number() -> None:
    a = phone.caller_key("+14155550123", b"key-one-0123456789")
    b = phone.caller_key("+14155550123", b"key-two-0123456789")
    c = phone.caller_key("+14155550124", b"key-one-0123456789")
    assert len({a, b, c}) == 3
    assert phone.caller_key("+14155550123", b"key-one-0123456789") == a  # stable


def test_same_number_in_any_format_gives_the_same_key() -> None:
    forms = ["+14155550123", "(415) 555-0123", "001 415 555 0123", "415.555.0123"]
    keys = {phone.caller_key(phone.classify(f, "US").e164 or "", KEY) for f in forms}
    assert len(keys) == 1


def test_legacy_key_is_plain_sha256() -> None:
    assert phone.legacy_key("+14155550123") == hashlib.sha256(b"+14155550123").hexdigest()
    assert phone.legacy_key("+14155550123") != phone.caller_key("+14155550123", KEY)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("a" * 64, True),
        ("0123456789abcdef" * 4, True),
        ("A" * 64, False),
        ("a" * 63, False),
        ("a" * 65, False),
        ("g" * 64, False),
        ("a" * 64 + "\n", False),
        ("", False),
    ],
)
def test_is_caller_key(text: str, ok: bool) -> None:
    assert phone.is_caller_key(text) is ok


def test_short() -> None:
    key = phone.caller_key("+14155550123", KEY)
    assert phone.short(key) == key[:12]
    assert len(phone.short(key)) == 12
