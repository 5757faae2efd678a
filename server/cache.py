"""The derived index cache: parsed records saved between runs so a large vault starts fast.

The files stay the truth. An entry is used only if the file's stat signature (mtime, ctime, size,
inode) is exactly what it was when the entry was parsed; anything else is read and parsed again. A
cache that is missing, corrupt, from another version of the record types, or from another vault is
ignored and rebuilt. It lives in the vault's `.git` folder, so it is never committed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import msgspec

from server.markdown import Kind
from server.records import Caller, DailyNote, Soul
from server.vault import Loaded

log = logging.getLogger("memory_bridge.cache")

CACHE_FILE = "memory-bridge/index-cache.msgpack"
# The format's version, part of every cache's `version`: bump it when the meaning of the cached
# data changes without its types changing (2: file kinds are `Kind` members, not strings; 3: a file
# with conflict markers is an error, where it once parsed; 4: comments and private sections are
# left out of the records).
FORMAT = 4


class _CallerEntry(msgspec.Struct, array_like=True):
    relpath: str
    digest: str
    stat: int
    record: Caller | None
    error: str | None


class _SoulEntry(msgspec.Struct, array_like=True):
    relpath: str
    digest: str
    stat: int
    record: Soul | None
    error: str | None


class _NoteEntry(msgspec.Struct, array_like=True):
    relpath: str
    digest: str
    stat: int
    record: DailyNote | None
    error: str | None


class _Snapshot(msgspec.Struct):
    version: str
    root: str
    callers: list[_CallerEntry]
    souls: list[_SoulEntry]
    notes: list[_NoteEntry]


def _schema_version() -> str:
    # Any change to the cached types, names or field types, or to FORMAT, invalidates old caches.
    schema = hashlib.sha256(msgspec.json.encode(msgspec.json.schema(_Snapshot))).hexdigest()[:16]
    return f"{FORMAT}:{schema}"


_ENTRY = {Kind.CALLER: _CallerEntry, Kind.SOUL: _SoulEntry, Kind.NOTE: _NoteEntry}
_decoder = msgspec.msgpack.Decoder(_Snapshot)
_encoder = msgspec.msgpack.Encoder()


def path_for(vault_root: Path) -> Path:
    """Where the cache of a vault is kept."""
    return vault_root / ".git" / CACHE_FILE


def load(vault_root: Path) -> dict[str, Loaded]:
    """The cached parse results by relative path; empty if there is no usable cache."""
    path = path_for(vault_root)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("index cache unreadable (%s); rebuilding it from the files", exc.strerror)
        return {}
    try:
        snapshot = _decoder.decode(data)
    except (msgspec.DecodeError, ValueError):
        log.warning("index cache is corrupt or from another version; rebuilding it from the files")
        return {}
    if snapshot.version != _schema_version() or snapshot.root != str(vault_root):
        log.info("index cache is from another version or vault; rebuilding it from the files")
        return {}
    entries: dict[str, Loaded] = {}
    for kind, group in ((Kind.CALLER, snapshot.callers), (Kind.SOUL, snapshot.souls), (Kind.NOTE, snapshot.notes)):
        for e in group:
            entries[e.relpath] = Loaded(e.relpath, kind, e.digest, e.stat, record=e.record, error=e.error)
    return entries


def save(vault_root: Path, loaded: list[Loaded]) -> None:
    """Write the cache atomically; failures are logged and otherwise harmless."""
    groups: dict[Kind, list[msgspec.Struct]] = {kind: [] for kind in _ENTRY}
    for item in loaded:
        entry = _ENTRY.get(item.kind)
        if entry is not None and item.digest:
            groups[item.kind].append(entry(item.relpath, item.digest, item.stat, item.record, item.error))
    snapshot = _Snapshot(_schema_version(), str(vault_root), groups[Kind.CALLER], groups[Kind.SOUL], groups[Kind.NOTE])  # type: ignore[arg-type]
    path = path_for(vault_root)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(_encoder.encode(snapshot))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write the index cache: %s", exc.strerror)
