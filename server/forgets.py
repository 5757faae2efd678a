"""Which callers were forgotten, and when, so a late post-call event cannot bring them back.

ElevenLabs retries a post-call delivery for a while; a delivery for a conversation that happened
before `DELETE /api/callers/{caller}` must not re-create the caller. The record (caller key and
time, one line each) lives in the vault's `.git/` folder: local, never tracked and never in the
vault's history, and it survives a restart. Caller keys are hashes, never phone numbers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from server.phone import is_caller_key

log = logging.getLogger("memory_bridge.forgets")

FORGETS_FILE = "memory-bridge/forgotten"  # inside .git/, like the phone hash key and the index cache


class Forgets:
    """Forgotten caller keys with the time (Unix seconds) of their latest forget."""

    def __init__(self, vault_root: Path) -> None:
        self.path = vault_root / ".git" / FORGETS_FILE
        self._when: dict[str, float] = {}
        try:
            lines = self.path.read_text(encoding="ascii").splitlines()
        except FileNotFoundError:
            lines = []
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read the record of forgotten callers: %s", exc)
            lines = []
        for line in lines:
            key, _, when = line.partition(" ")
            try:
                self._when[key] = max(float(when), self._when.get(key, 0.0))
            except ValueError:
                continue  # a torn last line after a crash: the forget was not acknowledged

    def add(self, keys: list[str], when: float) -> None:
        """Record that the callers with these keys were forgotten at `when`, durably, before it is acknowledged."""
        lines = [f"{key} {when:.3f}\n" for key in keys if is_caller_key(key)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="ascii") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        for key in keys:
            self._when[key] = max(when, self._when.get(key, 0.0))

    def drop(self, keys: Iterable[str]) -> None:
        """Take these keys out of the record (the callers were erased: their keys must not stay on disk)."""
        gone = set(keys)
        if not gone & self._when.keys():
            return
        for key in gone:
            self._when.pop(key, None)
        temp = self.path.with_suffix(".tmp")
        temp.write_text("".join(f"{key} {when:.3f}\n" for key, when in self._when.items()), encoding="ascii")
        os.replace(temp, self.path)

    def before_forget(self, keys: Iterable[str | None], started: float | None) -> bool:
        """Whether a call that started at `started` (None: unknown) belongs to a caller forgotten after it."""
        forgotten = [when for key in keys if key and (when := self._when.get(key)) is not None]
        if not forgotten:
            return False
        return started is None or started < max(forgotten)
