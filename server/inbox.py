"""The post-call inbox on disk: each event fsynced in the vault's `.git/` before it is answered (SPEC §13).

Events arriving together are held together (a group commit), as one batch: a list of calls with a
number that orders the batches across restarts. A batch is written into a free **slot**, a file of
fixed size made once and kept (a header with the batch's number, length and CRC, then the calls),
and `fdatasync`ed: the file's size and name never change, so no metadata is flushed and one sync
makes it durable. A batch too big for a slot, or one arriving while every slot is taken, goes to a
file of its own, `<batch>.json`, written to a temporary name, fsynced, renamed and the folder
fsynced. Once `hold_many` returns, a crash (even SIGKILL, even of the machine) cannot lose its
events. A batch is dropped (its slot's header cleared, or its file removed) once all its events are
applied and committed; applying one again after a crash in between is a duplicate, recognised by its
exact conversation id. What is held is the call as memory writes it: the caller key, never a raw
phone number (unless STORE_PHONE_NUMBERS asks for it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

import msgspec

log = logging.getLogger("memory_bridge.inbox")

INBOX_DIR = "memory-bridge/inbox"  # inside .git/, like the phone hash key and the forgets record
_SUFFIX = ".json"
_TEMP_SUFFIX = ".tmp"
_SEQ_DIGITS = 12
SLOTS = 1000  # events in one batch at most; an event's number is batch * SLOTS + its place in it
SLOT_BYTES = 64 * 1024  # one slot file; a batch that does not fit gets a file of its own
MAX_SLOT_FILES = 64
_SLOT_PREFIX = "slot-"
_HEADER = struct.Struct(">4sQII")  # magic, batch, payload length, CRC-32 of the payload
_MAGIC = b"MBI1"


class HeldCall(msgspec.Struct, frozen=True, kw_only=True):
    """A finished call as held in the inbox: everything its write-back needs, no raw phone number."""

    conversation_id: str
    key: str  # the caller key the call is written to
    legacy: str | None = None  # the predecessor's plain SHA-256 of the number, for an imported caller
    e164: str | None = None  # only with STORE_PHONE_NUMBERS on
    summary: str
    started: float | None = None  # when the call began, Unix seconds; None: not given
    fills: dict[str, str] = {}
    facts: tuple[str, ...] = ()  # from the `new_facts` data collection, clean and bounded (SPEC §16)
    received: float = 0.0  # when it was held, Unix seconds


class Held(msgspec.Struct, frozen=True):
    """One event in the inbox: its place in the order and the call."""

    seq: int
    call: HeldCall

    @property
    def batch(self) -> int:
        """The number of the batch file it is in."""
        return self.seq // SLOTS

    @property
    def name(self) -> str:
        """The file name of its batch in the inbox folder."""
        return _name(self.batch)


def _name(batch: int) -> str:
    return f"{batch:0{_SEQ_DIGITS}d}{_SUFFIX}"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[HeldCall])


class Inbox:
    """The folder of held events of one vault. Only one process (the server) holds events."""

    def __init__(self, vault_root: Path) -> None:
        self.folder = vault_root / ".git" / INBOX_DIR  # made by the first hold: reading it writes nothing
        self._numbering = threading.Lock()  # holds may run in threads at once: each batch gets a number of its own
        self._outstanding: dict[int, set[int]] = {}  # batch -> its events not yet applied
        self._slots: list[Path] = sorted(self.folder.glob(f"{_SLOT_PREFIX}*")) if self.folder.is_dir() else []
        self._free: list[Path] = []  # slots holding no batch (filled by `load`, or made by `hold_many`)
        self._slot_of: dict[int, Path] = {}  # batch -> the slot it is in
        in_slots = [batch for batch, _ in (_read_slot(path) for path in self._slots) if batch is not None]
        self._next = 1 + max([*(batch for batch, _ in self._files()), *in_slots], default=0)

    def _files(self) -> list[tuple[int, Path]]:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            stem, _, suffix = entry.name.partition(".")
            if "." + suffix == _SUFFIX and stem.isascii() and stem.isdigit():
                found.append((int(stem), Path(entry.path)))
        return sorted(found)

    def hold(self, call: HeldCall) -> Held:
        """Hold one event durably; see `hold_many`."""
        return self.hold_many([call])[0]

    def hold_many(self, calls: list[HeldCall]) -> list[Held]:
        """Write events durably, together, and return them; raises OSError if the disk refuses."""
        if not 0 < len(calls) <= SLOTS:
            raise ValueError(f"a batch holds 1 to {SLOTS} events")
        payload = _encoder.encode(calls)
        with self._numbering:
            batch = self._next
            self._next += 1
            slot = self._take_slot() if _HEADER.size + len(payload) <= SLOT_BYTES else None
        if slot is not None:
            try:
                _write_slot(slot, batch, payload)
            except OSError:
                with self._numbering:
                    self._free.append(slot)
                raise
        else:
            self._write_file(batch, payload)
        held = [Held(batch * SLOTS + n, call) for n, call in enumerate(calls)]
        with self._numbering:
            self._outstanding[batch] = {h.seq for h in held}
            if slot is not None:
                self._slot_of[batch] = slot
        return held

    def _take_slot(self) -> Path | None:
        """A free slot (made if there are fewer than the most), or None; called under the numbering lock."""
        if self._free:
            return self._free.pop()
        if len(self._slots) >= MAX_SLOT_FILES:
            return None
        self._ensure_folder()
        path = self.folder / f"{_SLOT_PREFIX}{len(self._slots):03d}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # Written, not just allocated: writing into it later changes no metadata for a sync to flush.
            os.write(fd, bytes(SLOT_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_folder(self.folder)
        self._slots.append(path)
        return path

    def _ensure_folder(self) -> None:
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            _fsync_folder(self.folder.parent)  # the new folder's own entry, so its first event survives a crash

    def _write_file(self, batch: int, payload: bytes) -> None:
        self._ensure_folder()
        final = self.folder / _name(batch)
        temp = final.with_suffix(_TEMP_SUFFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
        _fsync_folder(self.folder)

    def load(self) -> list[Held]:
        """Every held event, in order. A file that cannot be read is left in place and logged."""
        batches: list[tuple[int, list[HeldCall], Path | None]] = []
        for batch, path in self._files():
            try:
                batches.append((batch, _decoder.decode(path.read_bytes()), None))
            except (OSError, msgspec.DecodeError) as exc:
                log.error("inbox batch %s cannot be read, left in place: %s", path.name, exc)
        free = []
        for slot in self._slots:
            number, payload = _read_slot(slot)
            calls = None
            if number is not None and payload is not None:
                with contextlib.suppress(msgspec.DecodeError):
                    calls = _decoder.decode(payload)
            if number is None or calls is None:
                free.append(slot)  # empty, or a write a crash cut short (never answered)
            else:
                batches.append((number, calls, slot))
        held: list[Held] = []
        with self._numbering:
            self._free = free
            for batch, batch_calls, where in sorted(batches, key=lambda b: b[0]):
                events = [Held(batch * SLOTS + n, call) for n, call in enumerate(batch_calls[:SLOTS])]
                self._outstanding[batch] = {h.seq for h in events}
                if where is not None:
                    self._slot_of[batch] = where
                held += events
        return held

    def remove(self, *held: Held) -> None:
        """Forget applied events: a batch is dropped once all its events are applied.

        Losing a removal to a crash only makes its events duplicates later, so it is not synced.
        """
        emptied = []
        with self._numbering:
            for one in held:
                left = self._outstanding.get(one.batch)
                if left is None:
                    continue
                left.discard(one.seq)
                if not left:
                    del self._outstanding[one.batch]
                    emptied.append((one.batch, self._slot_of.pop(one.batch, None)))
        for batch, slot in emptied:
            if slot is None:
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / _name(batch)).unlink()
                continue
            _clear_slot(slot, batch)
            with self._numbering:
                self._free.append(slot)

    def clean_temporaries(self) -> int:
        """Remove events a crash interrupted before they were held (never answered 200); how many."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for path in self.folder.glob(f"*{_TEMP_SUFFIX}"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_slot(path: Path, batch: int, payload: bytes) -> None:
    record = _HEADER.pack(_MAGIC, batch, len(payload), zlib.crc32(payload)) + payload
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, record, 0)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _read_slot(path: Path) -> tuple[int | None, bytes | None]:
    """The batch number and calls a slot holds, or (None, None) for a free or torn one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER.size)
            if len(head) < _HEADER.size:
                return None, None
            magic, batch, length, crc = _HEADER.unpack(head)
            if magic != _MAGIC or length > SLOT_BYTES - _HEADER.size:
                return None, None
            payload = fh.read(length)
    except OSError as exc:
        log.error("inbox slot %s cannot be read: %s", path.name, exc)
        return None, None
    return (batch, payload) if len(payload) == length and zlib.crc32(payload) == crc else (None, None)


def _clear_slot(path: Path, batch: int) -> None:
    """Free a slot that still holds `batch` (never another batch written there since), its bytes zeroed.

    Zeroed, not only marked free: the calls' summaries and keys must not linger in `.git/` once they
    are in the vault, where a person's edit or an erasure (SPEC §14) decides what stays.
    """
    number, payload = _read_slot(path)
    if number != batch or payload is None:
        return
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(_HEADER.size + len(payload)), 0)
    finally:
        os.close(fd)
