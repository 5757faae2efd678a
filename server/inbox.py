"""The post-call inbox on disk: each event fsynced in the vault's `.git/` before it is answered (SPEC §13).

Events arriving together are held together (a group commit): one small JSON file per batch,
`<batch>.json`, a list of calls, named by a number that orders the batches across restarts. It is
written to a temporary name, fsynced, renamed into place and the folder fsynced: once `hold_many`
returns, a crash (even SIGKILL, even of the machine) cannot lose its events. A batch file is removed
once all its events were applied and committed; applying one again after a crash in between is a
duplicate, recognised by its exact conversation id. What is held is the call as memory writes it:
the caller key, never a raw phone number (unless STORE_PHONE_NUMBERS asks for it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

import msgspec

log = logging.getLogger("memory_bridge.inbox")

INBOX_DIR = "memory-bridge/inbox"  # inside .git/, like the phone hash key and the forgets record
_SUFFIX = ".json"
_TEMP_SUFFIX = ".tmp"
_SEQ_DIGITS = 12
SLOTS = 1000  # events in one batch at most; an event's number is batch * SLOTS + its place in it


class HeldCall(msgspec.Struct, frozen=True, kw_only=True):
    """A finished call as held in the inbox: everything its write-back needs, no raw phone number."""

    conversation_id: str
    key: str  # the caller key the call is written to
    legacy: str | None = None  # the predecessor's plain SHA-256 of the number, for an imported caller
    e164: str | None = None  # only with STORE_PHONE_NUMBERS on
    summary: str
    started: float | None = None  # when the call began, Unix seconds; None: not given
    fills: dict[str, str] = {}
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
        self._next = 1 + max((batch for batch, _ in self._files()), default=0)
        self._numbering = threading.Lock()  # holds may run in threads at once: each batch gets a number of its own
        self._outstanding: dict[int, set[int]] = {}  # batch -> its events not yet applied

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
        """Write events durably, in one file (file and folder fsynced), and return them; OSError if the disk refuses."""
        if not 0 < len(calls) <= SLOTS:
            raise ValueError(f"a batch holds 1 to {SLOTS} events")
        with self._numbering:
            batch = self._next
            self._next += 1
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            _fsync_folder(self.folder.parent)  # the new folder's own entry, so its first event survives a crash
        final = self.folder / _name(batch)
        temp = final.with_suffix(_TEMP_SUFFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, _encoder.encode(calls))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
        _fsync_folder(self.folder)
        held = [Held(batch * SLOTS + n, call) for n, call in enumerate(calls)]
        with self._numbering:
            self._outstanding[batch] = {h.seq for h in held}
        return held

    def load(self) -> list[Held]:
        """Every held event, in order. A file that cannot be read is left in place and logged."""
        held: list[Held] = []
        for batch, path in self._files():
            try:
                calls = _decoder.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError) as exc:
                log.error("inbox batch %s cannot be read, left in place: %s", path.name, exc)
                continue
            events = [Held(batch * SLOTS + n, call) for n, call in enumerate(calls[:SLOTS])]
            with self._numbering:
                self._outstanding[batch] = {h.seq for h in events}
            held += events
        return held

    def remove(self, *held: Held) -> None:
        """Forget applied events: a batch file goes once all its events are applied.

        Losing a removal to a crash only makes its events duplicates later.
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
                    emptied.append(one.batch)
        for batch in emptied:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / _name(batch)).unlink()

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
