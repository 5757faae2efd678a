"""The post-call inbox on disk: each event fsynced in the vault's `.git/` before it is answered (SPEC §13).

An event is one small JSON file, `<seq>.json`, named by a sequence number that orders the events
across restarts. It is written to a temporary name, fsynced, renamed into place and the folder
fsynced: once `hold` returns, a crash (even SIGKILL, even of the machine) cannot lose it. It is
removed only after it was applied and committed; applying it again after a crash in between is a
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
    def name(self) -> str:
        """Its file name in the inbox folder."""
        return f"{self.seq:0{_SEQ_DIGITS}d}{_SUFFIX}"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(HeldCall)


class Inbox:
    """The folder of held events of one vault. `hold` is called from one process only (the server)."""

    def __init__(self, vault_root: Path) -> None:
        self.folder = vault_root / ".git" / INBOX_DIR
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            _fsync_folder(self.folder.parent)  # the new folder's own entry, so its first event survives a crash
        self._next = 1 + max((seq for seq, _ in self._files()), default=0)
        self._numbering = threading.Lock()  # holds run in threads at once: each takes a number of its own

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
        """Write the event durably (file and folder fsynced) and return it; raises OSError if the disk refuses."""
        with self._numbering:
            held = Held(self._next, call)
            self._next += 1
        final = self.folder / held.name
        temp = final.with_suffix(_TEMP_SUFFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, _encoder.encode(call))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
        _fsync_folder(self.folder)
        return held

    def load(self) -> list[Held]:
        """Every held event, in order. A file that cannot be read is left in place and logged."""
        held = []
        for seq, path in self._files():
            try:
                held.append(Held(seq, _decoder.decode(path.read_bytes())))
            except (OSError, msgspec.DecodeError) as exc:
                log.error("inbox event %s cannot be read, left in place: %s", path.name, exc)
        return held

    def remove(self, *held: Held) -> None:
        """Forget applied events. Losing a removal to a crash only makes its event a duplicate later."""
        for one in held:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / one.name).unlink()

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
