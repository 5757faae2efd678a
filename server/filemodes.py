"""File modes: a vault readable by its owner alone (files 0600, folders 0700), new and existing.

New files get their mode from the process's umask, set once at start-up by the command line: every
creator honours it, ours (atomic writes, the cache, the locks) and git's in the worker process alike,
where per-call modes would miss whatever git creates in `.git/`. git's objects stay read-only (0400).
A vault made before this, or copied in with other modes, is tightened once, on the first start.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

# Group and others get nothing: files come out 0600, folders 0700.
PRIVATE_UMASK = 0o077
_OPEN_TO_OTHERS = 0o077
# Inside .git/, beside the key file: present once the vault's modes were tightened.
_STAMP = Path("memory-bridge") / "modes-tightened"


@dataclass(frozen=True)
class Tightened:
    """What one tightening changed: how many files and folders lost their group and other bits."""

    files: int = 0
    folders: int = 0

    @property
    def total(self) -> int:
        """Files and folders changed, together."""
        return self.files + self.folders


def keep_new_files_private() -> None:
    """Make everything this process (and each process it starts) creates from now on owner-only."""
    os.umask(PRIVATE_UMASK)


def tighten(root: Path) -> Tightened:
    """Take group and other permissions off every file and folder under `root`, `root` included.

    Links are neither changed nor followed: one may point out of the vault, at what is not ours.
    The owner's bits stay as they are, so git's read-only objects stay read-only.
    """
    files = folders = 0
    for folder, _dirs, names in os.walk(root):
        here = Path(folder)
        if _private(here):
            folders += 1
        for name in names:
            if _private(here / name):
                files += 1
    return Tightened(files, folders)


def tighten_once(root: Path) -> Tightened:
    """`tighten` a vault the first time this is called on it; later calls cost one stat.

    Needs the vault's `.git` folder, which keeps the mark that it was done.
    """
    stamp = root / ".git" / _STAMP
    if stamp.exists():
        return Tightened()
    done = tighten(root)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    return done


def _private(path: Path) -> bool:
    """Remove group and other bits from one file or folder; whether it had any."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False  # removed meanwhile (a person's editor, say)
    if stat.S_ISLNK(mode) or not mode & _OPEN_TO_OTHERS:
        return False
    os.chmod(path, stat.S_IMODE(mode) & ~_OPEN_TO_OTHERS)
    return True
