"""The derived index cache: used when it matches the files, detected and rebuilt when it does not.

The files stay the truth: a cache that is missing, stale, corrupt, from another version or from
another vault never puts anything in service that the files do not say.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgspec
import pytest

from server import cache
from server.markdown import Kind
from server.service import open_service, open_view
from tests.conftest import MARIA, OTHER, make_settings
from tests.live_helpers import caller_md, key_for


def open_index(vault: Path):  # type: ignore[no-untyped-def]
    """Open the vault as the service does at start-up; returns (index, files parsed from disk)."""
    service = open_service(make_settings(vault))
    return service.memory.index, service.watcher


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    open_service(make_settings(root))  # creates the vault
    (root / "callers" / "maria.md").write_text(caller_md(MARIA), encoding="utf-8")
    (root / "callers" / "other.md").write_text(caller_md(OTHER, name="Olive Other"), encoding="utf-8")
    return root


def parsed_at_start(vault: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, list[str]]:
    """Open the vault, recording which files were read and parsed rather than taken from the cache."""
    from server import vault as vault_module

    parsed: list[str] = []
    real = vault_module.parse

    def spy(relpath: str, data: bytes):  # type: ignore[no-untyped-def]
        parsed.append(relpath)
        return real(relpath, data)

    monkeypatch.setattr(vault_module, "parse", spy)
    index, _ = open_index(vault)
    monkeypatch.setattr(vault_module, "parse", real)
    return index, sorted(parsed)


def test_missing_cache_parses_every_file_and_writes_one(vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.path_for(vault.resolve()).unlink(missing_ok=True)
    index, parsed = parsed_at_start(vault, monkeypatch)
    assert parsed == ["callers/maria.md", "callers/other.md", "soul.md"]
    assert index.caller(key_for(MARIA)).name == "Maria Lopez"  # type: ignore[attr-defined]
    assert cache.path_for(vault.resolve()).is_file()


def test_a_fresh_cache_is_used_without_parsing(vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_index(vault)  # writes the cache
    index, parsed = parsed_at_start(vault, monkeypatch)
    assert parsed == []
    assert index.caller(key_for(OTHER)).name == "Olive Other"  # type: ignore[attr-defined]


def test_a_stale_entry_is_detected_and_the_file_reparsed(vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_index(vault)
    path = vault / "callers" / "maria.md"
    # Same size and the old mtime put back: only the inode and ctime tell the change.
    old = path.stat()
    path.write_text(caller_md(MARIA, name="Maria Lopes"), encoding="utf-8")
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert path.stat().st_size == old.st_size
    index, parsed = parsed_at_start(vault, monkeypatch)
    assert parsed == ["callers/maria.md"]
    assert index.caller(key_for(MARIA)).name == "Maria Lopes"  # type: ignore[attr-defined]
    # A file gone since the cache was written is gone from the index too.
    (vault / "callers" / "other.md").unlink()
    index, _ = parsed_at_start(vault, monkeypatch)
    assert index.caller(key_for(OTHER)) is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"not msgpack at all",
        lambda data: data[: len(data) // 2],
        lambda data: b"",
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_a_corrupt_cache_is_rebuilt(vault: Path, monkeypatch: pytest.MonkeyPatch, damage) -> None:  # type: ignore[no-untyped-def]
    open_index(vault)
    path = cache.path_for(vault.resolve())
    path.write_bytes(damage(path.read_bytes()))
    index, parsed = parsed_at_start(vault, monkeypatch)
    assert parsed == ["callers/maria.md", "callers/other.md", "soul.md"]
    assert index.caller(key_for(MARIA)).name == "Maria Lopez"  # type: ignore[attr-defined]
    assert cache.load(vault.resolve()).keys() == {"callers/maria.md", "callers/other.md", "soul.md"}


def test_a_cache_from_another_version_or_vault_is_ignored(vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_index(vault)
    path = cache.path_for(vault.resolve())
    snapshot = msgspec.msgpack.decode(path.read_bytes())
    for key, value in (("version", "0000000000000000"), ("root", "/somewhere/else")):
        path.write_bytes(msgspec.msgpack.encode({**snapshot, key: value}))
        _, parsed = parsed_at_start(vault, monkeypatch)
        assert parsed == ["callers/maria.md", "callers/other.md", "soul.md"], key


def test_a_cache_of_the_previous_format_is_rebuilt(vault: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before FORMAT 2 (file kinds as `Kind`), the version was the schema hash alone.
    open_index(vault)
    path = cache.path_for(vault.resolve())
    snapshot = msgspec.msgpack.decode(path.read_bytes())
    old = hashlib.sha256(msgspec.json.encode(msgspec.json.schema(cache._Snapshot))).hexdigest()[:16]
    path.write_bytes(msgspec.msgpack.encode({**snapshot, "version": old}))
    assert cache.load(vault.resolve()) == {}
    _, parsed = parsed_at_start(vault, monkeypatch)
    assert parsed == ["callers/maria.md", "callers/other.md", "soul.md"]


def test_cached_entries_keep_their_kind(vault: Path) -> None:
    open_index(vault)
    kinds = {relpath: loaded.kind for relpath, loaded in cache.load(vault.resolve()).items()}
    assert kinds == {"callers/maria.md": Kind.CALLER, "callers/other.md": Kind.CALLER, "soul.md": Kind.SOUL}


def test_the_cache_version_follows_the_caller_record_type(monkeypatch: pytest.MonkeyPatch) -> None:
    # Caller records are cached as raw bytes: a change to their type must still make old caches stale.
    now = cache._schema_version.__wrapped__()

    class Caller(msgspec.Struct, frozen=True):
        phone_hash: str
        renamed: str = ""

    monkeypatch.setattr(cache, "Caller", Caller)
    assert cache._schema_version.__wrapped__() != now


def reshaped_record(vault: Path, relpath: str) -> None:
    """Make one cached caller record one this version cannot decode, the cache's version left as it is."""
    path = cache.path_for(vault.resolve())
    snapshot = cache._decoder.decode(path.read_bytes())
    old_shape = {"phone_hash": key_for(MARIA), "name": "Stale Name", "call_count": "fourteen"}
    for entry in snapshot.callers:
        if entry.relpath == relpath:
            entry.record = msgspec.Raw(msgspec.msgpack.encode(old_shape))
    path.write_bytes(cache._encoder.encode(snapshot))


def test_a_cached_record_that_cannot_be_decoded_is_read_from_its_file(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_index(vault)
    reshaped_record(vault, "callers/maria.md")
    index, parsed = parsed_at_start(vault, monkeypatch)
    assert parsed == ["callers/maria.md"]
    assert index.caller(key_for(MARIA)).name == "Maria Lopez"  # type: ignore[attr-defined]
    assert index.caller(key_for(OTHER)).name == "Olive Other"  # type: ignore[attr-defined]

    reshaped_record(vault, "callers/maria.md")
    view = open_view(make_settings(vault))  # the CLI's read-only view takes the same way round
    assert view.index.caller(key_for(MARIA)).name == "Maria Lopez"  # type: ignore[union-attr]
