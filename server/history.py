"""A caller's history, read from git: every commit that changed their file, across renames (SPEC §14).

A caller is their key, not a file name: the file names they had are the paths whose content gained
or lost the key in some commit (git's pickaxe, renames seen as a removal and an addition); their
history is every commit that touched one of those paths.
"""

from __future__ import annotations

import msgspec

from server.gitrun import GitRunner


class Change(msgspec.Struct, frozen=True):
    """One commit in a caller's history."""

    commit: str
    author: str
    date: str
    subject: str
    paths: tuple[str, ...]


def paths_of(runner: GitRunner, key: str) -> list[str]:
    """Every path that ever held the caller's file."""
    out = runner.run_sync("log", f"-S{key}", "--no-renames", "--format=", "--name-only", "HEAD", check=False).stdout
    return sorted({line for line in out.splitlines() if line})


def of_caller(runner: GitRunner, key: str) -> list[Change]:
    """The commits that changed the caller's file, newest first."""
    paths = paths_of(runner, key)
    if not paths:
        return []
    out = runner.run_sync(
        "log",
        "--no-renames",
        "--format=%x01%H%x00%an%x00%ad%x00%s",
        "--date=format:%Y-%m-%d %H:%M",
        "--name-only",
        "HEAD",
        "--",
        *paths,
    ).stdout
    changes = []
    for entry in out.split("\x01")[1:]:
        head, _, names = entry.partition("\n")
        commit, author, date, subject = ([*head.split("\x00"), "", "", "", ""])[:4]
        touched = tuple(name for name in names.splitlines() if name)
        changes.append(Change(commit, author, date, subject, touched))
    return changes
