"""Which callers were erased (and which of them may never be remembered again), by token, in `.git/`.

An erased caller's key must not stay greppable anywhere, so this record holds only erasure tokens
(`server.erasure.token`: an HMAC of the key under the phone-hash key), the time of each erasure and
whether the caller is blocked (the do-not-remember list). Checking a key costs one HMAC, and only
while the record is not empty. The ids of the commits a rewrite replaced are kept beside it: a
fetched history that still holds one of them is the old history coming back, to be rewritten too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from server import erasure

log = logging.getLogger("memory_bridge.erasure")

_FILE = Path("memory-bridge", "erasures")  # inside .git/, never committed
_REPLACED = Path("memory-bridge", "erased-commits")
# How often the record's file is looked at for another process's erasures.
_LOOK_SECONDS = 0.5


class Erasure(msgspec.Struct, frozen=True):
    """One erasure: its token, when (Unix seconds), and whether the caller is on the do-not-remember list."""

    token: str
    at: float
    blocked: bool


class Erasures:
    """One vault's erased callers, by token."""

    def __init__(self, vault_root: Path, secret: bytes) -> None:
        self._git = vault_root / ".git"
        self._secret = secret
        self._by_token: dict[str, Erasure] = {}
        self._stamp: tuple[int, int] | None = None
        self._looked = 0.0
        self._load()

    def _load(self) -> None:
        self._stamp = self._file_stamp()
        self._by_token = {}
        for line in self._lines(_FILE):
            parts = line.split(" ")
            try:
                entry = Erasure(parts[0], float(parts[1]), parts[2] == "blocked")
            except (IndexError, ValueError):
                continue  # a torn last line after a crash: that erasure was not acknowledged
            self._by_token[entry.token] = _merged(self._by_token.get(entry.token), entry)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self._git / _FILE).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _fresh(self, recheck: bool = False) -> dict[str, Erasure]:
        """The entries, read again when another process (the command line) added one.

        The call path looks at the file at most twice a second; writes (`recheck`) look every time.
        """
        now = time.monotonic()
        if recheck or now - self._looked >= _LOOK_SECONDS:
            self._looked = now
            if self._file_stamp() != self._stamp:
                self._load()
        return self._by_token

    def _lines(self, name: Path) -> list[str]:
        try:
            return (self._git / name).read_text(encoding="ascii").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read %s: %s", name, exc)
            return []

    def _append(self, name: Path, lines: Iterable[str]) -> None:
        text = "".join(f"{line}\n" for line in lines)
        if not text:
            return
        path = self._git / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="ascii") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def token(self, key: str) -> str:
        """The erasure token of a caller key."""
        return erasure.token(self._secret, key)

    def add(self, entry: Erasure) -> None:
        """Record an erasure durably, before it is acknowledged."""
        self._append(_FILE, [f"{entry.token} {entry.at:.3f} {'blocked' if entry.blocked else 'erased'}"])
        self._by_token[entry.token] = _merged(self._by_token.get(entry.token), entry)
        self._stamp = self._file_stamp()

    @property
    def tokens(self) -> frozenset[str]:
        """Every erasure token recorded."""
        return frozenset(self._fresh())

    def erased(self, key: str) -> bool:
        """Whether the caller with this key was erased (the rewrite's test of each caller file)."""
        entries = self._fresh()
        return bool(entries) and self.token(key) in entries

    def blocked(self, key: str, recheck: bool = False) -> bool:
        """Whether calls from this caller must leave nothing behind (the do-not-remember list).

        `recheck`: look at the record's file now (before a write), not only twice a second.
        """
        entries = self._fresh(recheck)
        if not entries:
            return False
        entry = entries.get(self.token(key))
        return entry is not None and entry.blocked

    def before_erasure(self, keys: Iterable[str | None], started: float | None) -> bool:
        """Whether a call that started at `started` (None: unknown) belongs to a caller erased after it (or blocked)."""
        entries = self._fresh(recheck=True)
        for key in keys:
            entry = entries.get(self.token(key)) if key and entries else None
            if entry is not None and (entry.blocked or started is None or started < entry.at):
                return True
        return False

    def note_replaced(self, commits: Iterable[str]) -> None:
        """Remember the ids of commits a rewrite replaced."""
        self._append(_REPLACED, commits)

    def replaced(self) -> frozenset[str]:
        """The ids of every commit a rewrite replaced."""
        return frozenset(self._lines(_REPLACED))


def _merged(old: Erasure | None, new: Erasure) -> Erasure:
    if old is None:
        return new
    return Erasure(new.token, max(old.at, new.at), old.blocked or new.blocked)
