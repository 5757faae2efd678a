"""vault.py: the vault on disk: listing, loading, atomic writes and updates, and recording its own writes."""

from __future__ import annotations

import codecs
import hashlib
import os
from pathlib import Path

import pytest

from server.edits import append_to_section, new_caller_text, set_properties
from server.markdown import Kind
from server.parse import MAX_FILE_BYTES, VaultFileError, parse, parse_caller
from server.records import Soul
from server.vault import Vault
from tests.vault_samples import HAND, H

# ---------------------------------------------------------------------------------------------
# The vault on disk


@pytest.fixture
def v(tmp_path: Path) -> Vault:
    root = tmp_path / "vault"
    (root / "callers").mkdir(parents=True)
    (root / "notes").mkdir()
    return Vault(root)


def tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_load_a_good_caller(v: Vault) -> None:
    data = HAND.encode()
    (v.root / "callers" / "Maria Lopez.md").write_bytes(data)
    loaded = v.load("callers/Maria Lopez.md")
    assert loaded is not None
    assert loaded.error is None
    assert loaded.kind is Kind.CALLER
    assert loaded.digest == hashlib.blake2b(data, digest_size=16).hexdigest()
    assert loaded.stat == v.stat("callers/Maria Lopez.md") is not None
    assert loaded.record == parse_caller(HAND)


def test_load_missing_file_is_none(v: Vault) -> None:
    assert v.load("callers/nobody.md") is None
    assert v.stat("callers/nobody.md") is None


def test_load_broken_file_is_an_error_not_none(v: Vault) -> None:
    (v.root / "callers" / "x.md").write_text("---\nname: [\n---\n")
    loaded = v.load("callers/x.md")
    assert loaded is not None and loaded.record is None
    assert "not valid YAML" in (loaded.error or "")
    assert loaded.digest  # the bytes were read, so the watcher can tell when they change


def test_load_refuses_a_symlink(v: Vault, tmp_path: Path) -> None:
    outside = tmp_path / "secret.md"
    outside.write_text(f"---\nphone_hash: {H}\nname: Outside\n---\n")
    (v.root / "callers" / "link.md").symlink_to(outside)
    loaded = v.load("callers/link.md")
    assert loaded is not None
    assert loaded.record is None
    assert "link" in (loaded.error or "")
    # Also a link to a file inside the vault is not followed.
    (v.root / "callers" / "real.md").write_text(f"---\nphone_hash: {H}\n---\n")
    (v.root / "callers" / "alias.md").symlink_to(v.root / "callers" / "real.md")
    inside = v.load("callers/alias.md")
    assert inside is not None and inside.record is None and inside.error


def test_load_refuses_a_dangling_symlink_and_a_directory(v: Vault, tmp_path: Path) -> None:
    (v.root / "callers" / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    dangling = v.load("callers/dangling.md")
    assert dangling is not None and dangling.error  # never taken for a deletion
    (v.root / "callers" / "dir.md").mkdir()
    folder = v.load("callers/dir.md")
    assert folder is not None and folder.error


def test_load_refuses_an_oversized_file(v: Vault) -> None:
    big = f"---\nphone_hash: {H}\n---\n" + "x" * (MAX_FILE_BYTES + 1)
    (v.root / "callers" / "big.md").write_text(big)
    loaded = v.load("callers/big.md")
    assert loaded is not None and loaded.record is None
    assert "1 MB" in (loaded.error or "")


def test_load_binary_and_latin1(v: Vault) -> None:
    (v.root / "callers" / "bin.md").write_bytes(b"\x00\x01\x02" * 10)
    (v.root / "callers" / "latin.md").write_bytes(f"---\nphone_hash: {H}\nname: Mar\u00eda\n---\n".encode("latin-1"))
    assert "binary" in (v.load("callers/bin.md").error or "")  # type: ignore[union-attr]
    assert "UTF-8" in (v.load("callers/latin.md").error or "")  # type: ignore[union-attr]


def test_write_text_is_atomic_and_recognised(v: Vault) -> None:
    target = v.root / "callers" / "maria.md"
    target.write_text("old\n")
    old_inode = target.stat().st_ino
    sha = v.write_text("callers/maria.md", HAND)
    assert target.read_bytes() == HAND.encode()
    assert sha == hashlib.blake2b(HAND.encode(), digest_size=16).hexdigest()
    assert target.stat().st_ino != old_inode  # replaced by rename, never rewritten in place
    assert tmp_files(v.root) == []
    assert v.own.is_own_write("callers/maria.md", sha)
    loaded = v.load("callers/maria.md")
    assert loaded is not None and v.own.is_own_write("callers/maria.md", loaded.digest)
    # A person's edit afterwards is not ours.
    target.write_text(HAND + "\n- more\n")
    edited = v.load("callers/maria.md")
    assert edited is not None and not v.own.is_own_write("callers/maria.md", edited.digest)
    assert not v.own.is_own_write("callers/other.md", sha)


def test_write_text_creates_folders_and_keeps_no_temp_file_on_failure(v: Vault) -> None:
    v.write_text("callers/deep/er/x.md", "hi\n")
    assert (v.root / "callers" / "deep" / "er" / "x.md").read_text() == "hi\n"
    (v.root / "callers" / "taken.md").mkdir()
    (v.root / "callers" / "taken.md" / "child").write_text("x")
    with pytest.raises(OSError):
        v.write_text("callers/taken.md", "data")
    assert tmp_files(v.root) == []


@pytest.mark.parametrize("relpath", ["../escape.md", "callers/../../escape.md", "/etc/passwd"])
def test_writes_outside_the_vault_are_refused(v: Vault, relpath: str) -> None:
    with pytest.raises(VaultFileError, match="outside"):
        v.write_text(relpath, "x")
    assert not (v.root.parent / "escape.md").exists()


def test_write_through_a_symlinked_folder_outside_is_refused(v: Vault, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (v.root / "callers" / "out").symlink_to(outside)
    with pytest.raises(VaultFileError):
        v.write_text("callers/out/x.md", "x")
    assert list(outside.iterdir()) == []


def test_update(v: Vault) -> None:
    seen: list[str | None] = []

    def create(current: str | None) -> str | None:
        seen.append(current)
        return new_caller_text(H) if current is None else None

    result = v.update("callers/new.md", create)
    assert seen == [None]
    assert result is not None
    assert (v.root / "callers" / "new.md").read_text() == result.text == new_caller_text(H)
    assert v.own.is_own_write("callers/new.md", result.digest)
    assert v.update("callers/new.md", create) is None  # the change had nothing to do
    assert v.update("callers/new.md", lambda t: t) is None  # unchanged text is not written
    result = v.update("callers/new.md", lambda t: set_properties(t or "", {"call_count": 9}))
    assert result is not None
    assert parse_caller((v.root / "callers" / "new.md").read_text()).call_count == 9
    assert v.own.is_own_write("callers/new.md", result.digest)
    assert tmp_files(v.root) == []


def test_write_text_and_delete(v: Vault) -> None:
    assert not (v.root / "callers" / "m.md").exists()
    sha = v.write_text("callers/m.md", "hello\n")
    assert (v.root / "callers" / "m.md").read_text() == "hello\n"
    v.delete("callers/m.md")
    assert not (v.root / "callers" / "m.md").exists()
    assert not v.own.is_own_write("callers/m.md", sha)
    v.delete("callers/m.md")  # deleting twice is fine


def test_loaded_matches_load(v: Vault) -> None:
    sha = v.write_text("callers/m.md", HAND)
    assert v.loaded("callers/m.md", HAND, sha) == v.load("callers/m.md")
    broken = v.loaded("callers/b.md", "---\nname: x\n---\n", "0" * 64)
    assert broken.record is None and "phone_hash" in (broken.error or "")


def test_scan_lists_only_vault_files_sorted_with_their_stat(v: Vault) -> None:
    for rel in [
        "soul.md",
        "callers/b.md",
        "callers/a.md",
        "callers/sub/c.md",
        "callers/.hidden/d.md",
        "callers/.x.md.abcd.mb.tmp",
        "callers/readme.txt",
        "notes/2026-11-25.md",
        "notes/2026-11-24.md",
        "notes/ideas.md",
        "other/e.md",
    ]:
        (v.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (v.root / rel).write_text("x")
    found = v.scan()
    assert list(found) == [
        "callers/a.md",
        "callers/b.md",
        "callers/sub/c.md",
        "notes/2026-11-24.md",
        "notes/2026-11-25.md",
        "soul.md",
    ]
    assert found["callers/a.md"] == v.stat("callers/a.md")


def test_ensure_layout_and_stale_temp_files(tmp_path: Path) -> None:
    v = Vault(tmp_path / "new")
    created = v.ensure_layout()
    assert set(created) == {"callers/.gitkeep", "notes/.gitkeep", "soul.md", ".gitignore"}
    assert isinstance(parse("soul.md", (v.root / "soul.md").read_bytes()), Soul)
    assert "*.tmp" in (v.root / ".gitignore").read_text()
    assert v.ensure_layout() == []  # idempotent
    (v.root / "callers" / ".m.md.1a2b3c4d.mb.tmp").write_text("half")
    (v.root / ".soul.md.00000000.mb.tmp").write_text("half")
    (v.root / "callers" / "keep.md").write_text("x")
    assert v.remove_stale_temp_files() == 2
    assert tmp_files(v.root) == []
    assert (v.root / "callers" / "keep.md").exists()


def test_relpath_and_note_path(v: Vault, tmp_path: Path) -> None:
    assert v.relpath(v.root / "callers" / "a.md") == "callers/a.md"
    assert v.relpath(tmp_path / "elsewhere.md") is None
    assert Vault.note_path("2026-11-25") == "notes/2026-11-25.md"
    assert v.new_caller_path(H) == "callers/abababababab.md"


def test_next_seq_increases(v: Vault) -> None:
    a, b = v.next_seq(), v.next_seq()
    assert b > a


def test_update_keeps_a_byte_order_mark(v: Vault) -> None:
    path = v.root / "callers" / "bom.md"
    path.write_bytes(codecs.BOM_UTF8 + HAND.encode())
    assert v.update("callers/bom.md", lambda t: append_to_section(t or "", "Facts", "- New")) is not None
    data = path.read_bytes()
    assert data.startswith(codecs.BOM_UTF8) and not data.startswith(codecs.BOM_UTF8 * 2)
    assert data[3:].decode() == append_to_section(HAND, "Facts", "- New")


def test_a_live_writers_temporary_file_is_not_taken_for_a_leftover(tmp_path: Path) -> None:
    # The CLI starting beside a server must not delete the server's write in progress.
    v = Vault(tmp_path / "v")
    v.ensure_layout()
    live = v.root / "callers" / f".m.md.{os.getpid()}-1a2b3c4d.mb.tmp"
    dead = v.root / "callers" / ".m.md.999999999-1a2b3c4d.mb.tmp"
    for path in (live, dead):
        path.write_text("half")
    assert v.remove_stale_temp_files() == 1
    assert live.exists() and not dead.exists()
