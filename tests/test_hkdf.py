"""HKDF-SHA256 against RFC 5869's own test vectors, and tenant keys that are unrelated."""

from __future__ import annotations

import pytest

from server.hkdf import expand, extract, hkdf_sha256, tenant_key
from server.phone import caller_key

# RFC 5869, Appendix A, test cases 1 to 3 (SHA-256): IKM, salt, info, L, PRK, OKM.
VECTORS = [
    (
        "0b" * 22,
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes(range(0x00, 0x50)).hex(),
        bytes(range(0x60, 0xB0)).hex(),
        bytes(range(0xB0, 0x100)).hex(),
        82,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09"
        "da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        "0b" * 22,
        "",
        "",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "prk", "okm"), VECTORS)
def test_rfc5869_vectors(ikm: str, salt: str, info: str, length: int, prk: str, okm: str) -> None:
    assert extract(bytes.fromhex(salt), bytes.fromhex(ikm)).hex() == prk
    assert expand(bytes.fromhex(prk), bytes.fromhex(info), length).hex() == okm
    assert hkdf_sha256(bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info), length).hex() == okm


@pytest.mark.parametrize("length", [0, 255 * 32 + 1])
def test_lengths_outside_the_rfc_are_refused(length: int) -> None:
    with pytest.raises(ValueError):
        expand(b"k" * 32, b"", length)


def test_tenant_keys_are_unrelated_and_stable() -> None:
    a, b = tenant_key("master-key-123", "acme"), tenant_key("master-key-123", "bolt")
    assert a == tenant_key("master-key-123", "acme")
    assert len(a) == 64 and a != b and a != tenant_key("other-master", "acme")
    assert b"master-key-123".hex() not in a
    number = "+447700900123"
    keys = {caller_key(number, key.encode()) for key in (a, b, "master-key-123")}
    assert len(keys) == 3
