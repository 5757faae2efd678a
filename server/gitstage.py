"""Staging: changed files, or the exact bytes the service wrote, into git's index (SPEC §3).

No command line grows with the number of files: paths go to git on stdin, and many files at once
(a person's `sed` over the vault, an import) go to `update-index` rather than `git add`, whose
pathspec matching costs files x index entries.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from server.gitrun import GitRunner

# Up to this many files are staged by `git add` (whose pathspec matching costs files x index
# entries); more go to `git update-index`, which looks each path up once.
_ADD_MAX_PATHS = 64
# Paths and messages go to git on stdin, NUL-separated: no command line grows with a commit.
_PATHS_FROM_STDIN = ("--pathspec-from-file=-", "--pathspec-file-nul")


@dataclass(frozen=True)
class Exact:
    """One file's change as the service made it: the bytes it was made on and the bytes written.

    Committed as these bytes, not as whatever the file holds by the time git looks: a person may
    delete or edit the file in between, and that is their own change, with its own commit.
    """

    base: bytes | None  # None: the file did not exist
    data: bytes | None  # None: the change removed the file


def blob_id(data: bytes | None) -> str | None:
    """git's object id of a blob holding `data` (None for no file)."""
    if data is None:
        return None
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def stage_sync(runner: GitRunner, paths: list[str]) -> None:
    """Stage `paths` as they are on disk, now (start-up and the CLI)."""
    staging = _staging(runner.root, paths)
    if staging.added:
        runner.run_sync("add", "-A", *_PATHS_FROM_STDIN, stdin=_nul(staging.added))
    files = staging.files
    if files:
        files = _not_ignored(files, runner.run_sync(*_IGNORED).stdout)
    if files or staging.gone:
        runner.run_sync(*_UPDATE_INDEX, stdin=_nul(files + staging.gone))


async def stage(runner: GitRunner, paths: list[str]) -> None:
    """Stage `paths` as they are on disk."""
    staging = _staging(runner.root, paths)
    if staging.added:
        await runner.run("add", "-A", *_PATHS_FROM_STDIN, stdin=_nul(staging.added).encode())
    files = staging.files
    if files:
        files = _not_ignored(files, (await runner.run(*_IGNORED))[1])
    if files or staging.gone:
        await runner.run(*_UPDATE_INDEX, stdin=_nul(files + staging.gone).encode())


def _staging(root: Path, paths: list[str]) -> _Staging:
    """How to stage `paths` (without repeats), each command's cost bounded by the paths given."""
    root_text = str(root)
    present: list[str] = []
    gone: list[str] = []
    for path in dict.fromkeys(paths):
        (present if os.path.lexists(os.path.join(root_text, path)) else gone).append(path)
    if len(present) <= _ADD_MAX_PATHS:
        return _Staging(added=present, files=[], gone=gone)
    # Many files (a person's `sed` over the vault, an import): `update-index`, once the paths the
    # vault ignores are left out as `git add` would; a folder (`.`) still needs `git add`.
    folders = {path for path in present if os.path.isdir(os.path.join(root_text, path))}
    files = [path for path in present if path not in folders] if folders else present
    return _Staging(added=list(folders), files=files, gone=gone)


async def index_blobs(runner: GitRunner, paths: list[str]) -> dict[str, str | None]:
    """The blob git's index holds at each path (None: no entry), asked on stdin in one command."""
    found: dict[str, str | None] = dict.fromkeys(paths)
    # One name per line: a path with a line break in it is taken as unknown (its base is then
    # committed as a hand edit, which is only ever one commit too many).
    asked = [path for path in paths if "\n" not in path and "\0" not in path]
    if asked:
        out = (await runner.run(*_INDEX_BLOBS, stdin=_nul([f":{path}" for path in asked]).encode()))[1]
        answers = out.splitlines()
        if len(answers) == len(asked):
            for path, answer in zip(asked, answers, strict=True):
                found[path] = None if answer.endswith(" missing") else answer.strip()
    return found


async def stage_exact(runner: GitRunner, contents: dict[str, bytes | None]) -> None:
    """Put these bytes (None: no file) in git's index for these paths, whatever the files hold now.

    The bytes are laid out as a private work tree in `.git/`, which no person edits, and one
    `update-index` reads it: it writes each blob, sets each entry, and removes the paths whose
    file is absent there, all from paths on stdin.
    """
    stage = runner.root / ".git" / "memory-bridge" / "stage"
    await asyncio.to_thread(_lay_out, stage, contents)
    try:
        await runner.run(f"--work-tree={stage}", *_UPDATE_INDEX, stdin=_nul(list(contents)).encode())
    finally:
        # Only one process stages at a time (the writer lock is held), so the folder is ours.
        await asyncio.to_thread(shutil.rmtree, stage, True)


def _lay_out(stage: Path, contents: dict[str, bytes | None]) -> None:
    """Write each path's bytes under `stage` (none for a removed file); a failure leaves nothing behind."""
    try:
        stage.mkdir(parents=True, exist_ok=True)  # git needs the work tree, even with only removals in it
        for path, data in contents.items():
            if data is not None:
                copy = stage / path
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(data)
    except OSError:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@dataclass
class _Staging:
    """Paths for `git add` (few files, or folders), for `git update-index` (many files), and gone."""

    added: list[str]
    files: list[str]
    gone: list[str]


# Adds, updates or (for a path no longer on disk) removes each path read from stdin.
_UPDATE_INDEX = ("update-index", "--add", "--remove", "-z", "--stdin")
# The blob id of each `:path` (the index's entry) named on stdin, or "<name> missing".
_INDEX_BLOBS = ("cat-file", "-z", "--batch-check=%(objectname)")


def _nul(paths: list[str]) -> str:
    return "".join(f"{path}\0" for path in paths)


# The untracked files the vault's ignore rules cover, a folder wholly ignored as one `folder/` entry.
# (`check-ignore` would say it per path, but takes minutes for a hundred thousand tracked ones.)
_IGNORED = ("ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory")


def _not_ignored(paths: list[str], listing: str) -> list[str]:
    """`paths` without those `listing` (the output of _IGNORED) names, as `git add` would skip them."""
    ignored = set(listing.split("\0")) - {""}
    if not ignored:
        return paths
    return [path for path in paths if not _under(path, ignored)]


def _under(path: str, ignored: set[str]) -> bool:
    if path in ignored:
        return True
    parts = path.split("/")
    return any("/".join(parts[:n]) + "/" in ignored for n in range(1, len(parts)))
