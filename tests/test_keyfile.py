"""keyfile.py: the phone-hash key file in the vault's .git folder."""

from __future__ import annotations

import os
from pathlib import Path

from server import keyfile
from server.keyfile import KEY_FILE


def test_phone_hash_key(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    root.mkdir()
    assert keyfile.phone_hash_key(root, "configured-key-123") == (b"configured-key-123", False)
    key, generated = keyfile.phone_hash_key(root, None)
    assert generated
    assert len(key) == 64
    path = root / ".git" / KEY_FILE
    assert path.is_file()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert keyfile.phone_hash_key(root, None) == (key, True)  # the same key next time
    assert keyfile.phone_hash_key(root, "") == (key, True)


def test_read_key_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    assert keyfile.read_key(root, None) is None
    assert not root.exists(), "a read-only look never creates the vault"
    root.mkdir()
    assert keyfile.read_key(root, "") is None
    assert list(root.iterdir()) == [], "nor the .git folder or the key"
    assert keyfile.read_key(root, "configured-key-123") == b"configured-key-123"


def test_read_key_finds_the_key_the_service_made(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    root.mkdir()
    key, _ = keyfile.phone_hash_key(root, None)
    assert keyfile.read_key(root, None) == key
    assert keyfile.read_key(root, "configured-key-123") == b"configured-key-123"  # configured wins


def test_read_key_of_a_file_where_a_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / ".git").write_text("gitdir: elsewhere\n")  # a worktree's .git is a file
    assert keyfile.read_key(tmp_path, None) is None
