"""The phone-hash key file: the local HMAC key for caller keys, and its fingerprint, in the vault's `.git` folder.

The key lives inside `.git/`, so it is never tracked or committed, and it travels with the vault
when a person copies the folder. A configured key (PHONE_HASH_KEY) always wins over the file.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_FILE = "memory-bridge/phone-hash-key"  # inside .git/: local, never tracked, travels with the vault


def path_for(vault_root: Path) -> Path:
    """Where the key file of a vault is kept."""
    return vault_root / ".git" / KEY_FILE


def read_key(vault_root: Path, configured: str | None) -> bytes | None:
    """The key for caller keys: the configured one, else the vault's key file; None if neither exists.

    Creates nothing: for read-only commands, which must never create a vault or a key.
    """
    if configured:
        return configured.encode()
    path = path_for(vault_root)
    try:
        return path.read_text(encoding="ascii").strip().encode()
    except (FileNotFoundError, NotADirectoryError):
        return None


def phone_hash_key(vault_root: Path, configured: str | None) -> tuple[bytes, bool]:
    """The key for caller keys: the configured one, else the vault's own (created on first use).

    Returns the key and whether it is the vault's own rather than configured (the caller should warn).
    """
    if configured:
        return configured.encode(), False
    path = path_for(vault_root)
    if path.is_file():
        return path.read_text(encoding="ascii").strip().encode(), True
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    # O_EXCL and 0600: never overwrite a key another process just made, and keep it from other users.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    return key.encode(), True


# The fingerprint of the key the vault's callers are keyed with, beside the key file: never the key.
FINGERPRINT_FILE = "memory-bridge/phone-hash-key-fingerprint"
_FINGERPRINT_INPUT = b"memory-bridge phone-hash key fingerprint"


class KeyCheck(enum.Enum):
    """How the key in use compares with the one the vault's callers were keyed with."""

    MATCHES = "matches"
    RECORDED = "recorded"  # the vault had no fingerprint yet: this one is now the reference
    DIFFERS = "differs"


def fingerprint(key: bytes) -> str:
    """A short, one-way fingerprint of a key: tells two keys apart without revealing either."""
    return hmac.new(key, _FINGERPRINT_INPUT, hashlib.sha256).hexdigest()[:16]


def expected_fingerprint(vault_root: Path) -> str | None:
    """The fingerprint of the key the vault's callers were keyed with, as far as the vault knows.

    The recorded fingerprint; for a vault from before fingerprints, that of its own key file (the
    service makes one only when it keys callers without a configured key); None if neither exists.
    """
    try:
        return (vault_root / ".git" / FINGERPRINT_FILE).read_text(encoding="ascii").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        pass
    own = read_key(vault_root, None)
    return fingerprint(own) if own is not None else None


def check_and_record(vault_root: Path, key: bytes) -> KeyCheck:
    """Compare the key in use with the vault's; record the vault's fingerprint if it had none."""
    expected = expected_fingerprint(vault_root)
    path = vault_root / ".git" / FINGERPRINT_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((expected or fingerprint(key)) + "\n", encoding="ascii")
        if expected is None:
            return KeyCheck.RECORDED
    return KeyCheck.MATCHES if expected in (None, fingerprint(key)) else KeyCheck.DIFFERS


def mismatch_advice(vault_root: Path) -> str:
    """What to do when the key in use is not the vault's: in words that name no key."""
    own = path_for(vault_root)
    where = f"; the key the service generated is in {own}" if own.is_file() else ""
    return (
        f"PHONE_HASH_KEY is not the key this vault's callers were keyed with (its fingerprint is "
        f"{expected_fingerprint(vault_root)}), so every caller would be taken for a new one: set PHONE_HASH_KEY "
        f"back to that key{where}. To start over with the new key on purpose, delete "
        f"{vault_root / '.git' / FINGERPRINT_FILE}"
    )
