"""A vault's own phone numbers (SPEC §12): configured, and learned from its calls, kept as keys only.

An outbound call reaches the webhooks with our own number as `caller_id`; keyed on it, every callee
would share one memory. So a vault's own numbers are never taken as a caller: those configured (its
`tenant.md` `numbers:` and `AGENT_NUMBERS`), and those learned from calls (the called number of
every inbound call, the agent's number of every finished call). Learned numbers are kept as caller
keys (HMACs), never as numbers (SPEC §7), in the vault's `.git/` folder, which is never committed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("memory_bridge.identity")

LEARNED_FILE = "memory-bridge/own-numbers"  # inside .git/: one caller key a line
OUTBOUND_FILE = "memory-bridge/outbound-seen"  # inside .git/: present once an outbound call was seen
# A business has a handful of numbers; requests naming endless called numbers must not grow this for ever.
MAX_LEARNED = 1_000


def _read_keys(path: Path) -> set[str]:
    try:
        text = path.read_text(encoding="ascii")
    except (FileNotFoundError, NotADirectoryError):
        return set()
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("could not read the learned own numbers: %s", type(exc).__name__)
        return set()
    return {line.strip() for line in text.splitlines() if len(line.strip()) == 64}


class OwnNumbers:
    """The numbers that are ours: configured ones as E.164, learned ones as caller keys."""

    def __init__(self, configured: Iterable[str], git_dir: Path | None = None) -> None:
        self.configured = frozenset(configured)
        self._learned_path = git_dir / LEARNED_FILE if git_dir is not None else None
        self._outbound_path = git_dir / OUTBOUND_FILE if git_dir is not None else None
        self.learned = _read_keys(self._learned_path) if self._learned_path is not None else set()
        self.outbound_seen = 0  # outbound calls seen since start (shown on /health)
        self._full = False  # MAX_LEARNED reached (said once in the log)

    @property
    def any_configured(self) -> bool:
        """Whether any own number is configured; without one, learned numbers only make a call neutral."""
        return bool(self.configured)

    def learn(self, key: str) -> bool:
        """Remember a caller key as one of our numbers; True if it was new (and was written down)."""
        if key in self.learned:
            return False
        if len(self.learned) >= MAX_LEARNED:
            if not self._full:
                log.warning("learned %d own numbers; learning no more (set AGENT_NUMBERS or numbers:)", MAX_LEARNED)
                self._full = True
            return False
        self.learned.add(key)
        self._save(append=key)
        return True

    def unlearn(self, key: str) -> bool:
        """Forget a caller key taken for ours by mistake (a finished call said it was the other party)."""
        if key not in self.learned:
            return False
        self.learned.discard(key)
        self._save()
        return True

    def note_outbound(self) -> None:
        """Count an outbound call, and leave the mark `doctor` looks for."""
        self.outbound_seen += 1
        path = self._outbound_path
        if self.outbound_seen == 1 and path is not None and not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            except OSError as exc:
                log.warning("could not note an outbound call for doctor: %s", type(exc).__name__)

    def _save(self, append: str | None = None) -> None:
        path = self._learned_path
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if append is not None:
                with path.open("a", encoding="ascii") as fh:
                    fh.write(append + "\n")
                return
            temp = path.with_name(path.name + ".tmp")
            temp.write_text("".join(key + "\n" for key in sorted(self.learned)), encoding="ascii")
            os.replace(temp, path)
        except OSError as exc:
            # Kept in memory all the same: only a restart would forget it.
            log.warning("could not write the learned own numbers down: %s", type(exc).__name__)


def outbound_seen(git_dir: Path) -> bool:
    """Whether a vault has seen an outbound call (for `doctor`)."""
    return (git_dir / OUTBOUND_FILE).exists()


def learned_count(git_dir: Path) -> int:
    """How many own numbers a vault has learned (for `doctor`)."""
    return len(_read_keys(git_dir / LEARNED_FILE))
