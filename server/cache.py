"""The derived index cache: parsed records saved between runs so a large vault starts fast.

The files stay the truth. An entry is used only if the file's stat signature (mtime, ctime, size,
inode) is exactly what it was when the entry was parsed; anything else is read and parsed again. A
cache that is missing, corrupt, from another version of the record types, or from another vault is
ignored and rebuilt. It lives in the vault's `.git` folder, so it is never committed.
"""

from __future__ import annotations

import functools
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
# left out of the records; 5: each caller record encoded on its own, decoded as it is used; 6: file
# digests are 128-bit BLAKE2b; 7: the caller record's type is part of the version).
FORMAT = 7


class _CallerEntry(msgspec.Struct, array_like=True):
    relpath: str
    digest: str
    stat: int
    # A caller's record (or nil), encoded on its own and decoded only as the index takes it (see `Cached`).
    record: msgspec.Raw
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


@functools.cache
def _schema_version() -> str:
    # Once per process (a schema costs 2 ms; a server of a hundred tenants loads a hundred caches).
    # Any change to the cached types, names or field types, or to FORMAT, invalidates old caches.
    # A caller's record is cached as raw bytes (`_CallerEntry.record`): its type is hashed beside the snapshot's.
    _, components = msgspec.json.schema_components((_Snapshot, Caller))
    schema = hashlib.sha256(msgspec.json.encode(components)).hexdigest()[:16]
    return f"{FORMAT}:{schema}"


_ENTRY = {Kind.CALLER: _CallerEntry, Kind.SOUL: _SoulEntry, Kind.NOTE: _NoteEntry}
_decoder = msgspec.msgpack.Decoder(_Snapshot)
_caller_decoder = msgspec.msgpack.Decoder(Caller | None)
_encoder = msgspec.msgpack.Encoder()


class Cached(msgspec.Struct, frozen=True):
    """One cached parse result; a caller's record is decoded only when `loaded` is asked for.

    Decoding all 100,000 records first and then sharing their repeated strings (`share_strings`, as
    the index does) would leave the duplicates' freed memory scattered among the live records, where
    the process never gives it back: about a quarter more resident memory than parsing the files.
    Decoded one at a time, each record's duplicates are freed before the next is made.
    """

    relpath: str
    kind: Kind
    digest: str
    stat: int
    record: msgspec.Raw | Caller | Soul | DailyNote | None
    error: str | None

    def loaded(self) -> Loaded | None:
        """The entry as the vault module gives a freshly parsed file; None if its record cannot be decoded."""
        record = self.record
        if isinstance(record, msgspec.Raw):
            try:
                record = _caller_decoder.decode(record)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return None  # damaged, or of another shape than this version's: the file is read instead
        return Loaded(self.relpath, self.kind, self.digest, self.stat, record=record, error=self.error)


def current(cached: dict[str, Cached], relpath: str, stat: int) -> Loaded | None:
    """The cached parse result of `relpath` if the file is unchanged since (`stat`) and it decodes; else None."""
    hit = cached.get(relpath)
    return hit.loaded() if hit is not None and hit.stat == stat else None


def path_for(vault_root: Path) -> Path:
    """Where the cache of a vault is kept."""
    return vault_root / ".git" / CACHE_FILE


def load(vault_root: Path) -> dict[str, Cached]:
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
    entries: dict[str, Cached] = {}
    for kind, group in ((Kind.CALLER, snapshot.callers), (Kind.SOUL, snapshot.souls), (Kind.NOTE, snapshot.notes)):
        for e in group:
            entries[e.relpath] = Cached(e.relpath, kind, e.digest, e.stat, e.record, e.error)
    return entries


def save(vault_root: Path, loaded: list[Loaded]) -> None:
    """Write the cache atomically; failures are logged and otherwise harmless."""
    groups: dict[Kind, list[msgspec.Struct]] = {kind: [] for kind in _ENTRY}
    for item in loaded:
        entry = _ENTRY.get(item.kind)
        if entry is not None and item.digest:
            record: msgspec.Struct | msgspec.Raw | None = item.record
            if item.kind is Kind.CALLER:
                record = msgspec.Raw(_encoder.encode(record))
            groups[item.kind].append(entry(item.relpath, item.digest, item.stat, record, item.error))
    snapshot = _Snapshot(_schema_version(), str(vault_root), groups[Kind.CALLER], groups[Kind.SOUL], groups[Kind.NOTE])  # type: ignore[arg-type]
    path = path_for(vault_root)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(_encoder.encode(snapshot))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write the index cache: %s", exc.strerror)
