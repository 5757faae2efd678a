"""The newest acknowledged commit, and whether the branch still holds it (SPEC §11: writes survive people's git).

Every commit the git writer makes contains the one acknowledged before it, so the newest is enough
to check: if the branch moved so that it left the branch's history (a reset, a `rebase --abort`, a
force-push merged in), acknowledged writes were dropped and must be merged back. Kept in the vault's
`.git/memory-bridge/acknowledged` (never committed), so a restart still knows it.
"""

from __future__ import annotations

import enum
import logging
from pathlib import Path

from server import gitmerge
from server.gitrun import GitRunner

log = logging.getLogger("memory_bridge.git")

_FILE = Path(".git", "memory-bridge", "acknowledged")


class Held(enum.Enum):
    """Whether the branch holds the newest acknowledged commit."""

    YES = "yes"
    LOST = "lost"  # the branch moved away from it: merge it back
    GONE = "gone"  # the commit is not in the repository at all (nothing to merge back)


class Acknowledged:
    """The vault's newest acknowledged commit."""

    def __init__(self, root: Path) -> None:
        self._path = root / _FILE
        self.sha = self._read()
        # The last HEAD known to hold it: asking git again is needed only once HEAD moves.
        self._checked_head = self.sha

    def note(self, sha: str) -> None:
        """`sha` was just committed and acknowledged (it contains every earlier acknowledged commit)."""
        self.sha = self._checked_head = sha
        # No fsync, as for the vault's files: a crashed process, not a lost machine, is what it survives.
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            temp = self._path.with_suffix(".tmp")
            temp.write_text(sha + "\n")
            temp.replace(self._path)
        except OSError as exc:
            log.warning("cannot note the acknowledged commit: %s", exc)

    def known_held_by(self, head: str | None) -> bool:
        """Whether `head` is known to hold the newest acknowledged commit, without asking git."""
        return self.sha is None or head is None or head in (self.sha, self._checked_head)

    async def held_by(self, runner: GitRunner, head: str | None) -> Held:
        """Whether commit `head` holds the newest acknowledged commit in its history."""
        sha = self.sha
        if sha is None or head is None or self.known_held_by(head):
            return Held.YES
        if await gitmerge.rev(runner, sha) is None:
            return Held.GONE
        if await gitmerge.is_ancestor(runner, sha, head):
            self._checked_head = head
            return Held.YES
        return Held.LOST

    def _read(self) -> str | None:
        try:
            sha = self._path.read_text().strip()
        except OSError:
            return None
        return sha if len(sha) == 40 else None
