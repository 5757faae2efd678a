"""What one `doctor` check found: how serious it is, and what to do about it."""

from __future__ import annotations

import enum

import msgspec


class Level(enum.Enum):
    """How serious a finding is; `doctor` exits non-zero if any is FIX."""

    OK = "ok"  # as it should be
    WARN = "warn"  # works, but a person may want to act
    FIX = "fix"  # something does not work until a person fixes it


class Finding(msgspec.Struct, frozen=True):
    """One line of `doctor`: its level and its message (what was found, and what to do)."""

    level: Level
    message: str
