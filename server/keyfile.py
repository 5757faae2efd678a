"""The phone-hash key file: the local HMAC key for caller keys, kept in the vault's `.git` folder.

The key lives inside `.git/`, so it is never tracked or committed, and it travels with the vault
when a person copies the folder. A configured key (PHONE_HASH_KEY) always wins over the file.
"""

from __future__ import annotations

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
