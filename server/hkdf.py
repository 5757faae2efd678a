"""HKDF-SHA256 (RFC 5869): one tenant's caller-key key derived from the service's PHONE_HASH_KEY, pure."""

from __future__ import annotations

import hmac

_HASH_LEN = 32  # SHA-256
# Names what the derived key is for, so that the same master key can never yield it for another use.
_INFO_PREFIX = b"memory-bridge tenant caller keys\x00"


def extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract: a pseudorandom key from input keying material (an empty salt is HashLen zeros)."""
    return hmac.digest(salt or bytes(_HASH_LEN), ikm, "sha256")


def expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand: `length` bytes of output keying material from a pseudorandom key and `info`."""
    if not 0 < length <= 255 * _HASH_LEN:
        raise ValueError("HKDF-SHA256 gives 1 to 8160 bytes")
    out, block = b"", b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
        counter += 1
    return out[:length]


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = _HASH_LEN) -> bytes:
    """HKDF-SHA256 of RFC 5869: Extract then Expand."""
    return expand(extract(salt, ikm), info, length)


def tenant_key(master: str, tenant: str) -> str:
    """A tenant's caller-key key, as 64 hex digits: unrelated to every other tenant's and to `master` itself."""
    return hkdf_sha256(master.encode(), b"", _INFO_PREFIX + tenant.encode()).hex()
