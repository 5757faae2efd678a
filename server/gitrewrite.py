"""Rewriting the vault's whole history without erased callers, with git's own plumbing (SPEC §14).

`git fast-export --all` writes every ref's history to a file in `.git/`; `server.erasure` filters it
(twice: first to learn the callers' names and file names, then to write the history without them);
`git fast-import --force` makes the new commits and moves every ref. Then git's index is read from
the new HEAD, reflogs are expired and everything unreachable is pruned, so no object of the old
history is left. The temporary files hold the old history and are removed whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec

from server import erasure
from server.gitrun import GitRunner

log = logging.getLogger("memory_bridge.erasure")

_WORK = Path("memory-bridge", "rewrite")  # inside .git/


class Rewritten(msgspec.Struct):
    """What a rewrite did: old commit id -> new one (for the commits that changed), and what it removed."""

    moved: dict[str, str]
    paths: set[str]
    keys: set[str]
    dropped_blobs: int


def _filter(export: Path, imported: Path, erased: Callable[[str], bool]) -> tuple[erasure.Found, erasure.Rewriting]:
    with open(export, "rb") as stream:
        found = erasure.survey(erasure.events(stream), erased)
    with open(export, "rb") as stream, open(imported, "wb") as out:
        record = erasure.rewrite(erasure.events(stream), erased, found, out.write)
    return found, record


def _marks(path: Path) -> dict[str, str]:
    marks = {}
    for line in path.read_text(encoding="ascii").splitlines():
        mark, _, sha = line.partition(" ")
        marks[mark] = sha
    return marks


async def rewrite(runner: GitRunner, erased: Callable[[str], bool]) -> Rewritten:
    """Rewrite every ref of the repository without the callers `erased` names (by key); prune the rest.

    Runs alone (in the git writer's turn). The working tree is not touched: the caller removes the
    erased files from it; git's index is read afresh from the new HEAD.
    """
    work = runner.root / ".git" / _WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    export, imported, marks = work / "export", work / "import", work / "marks"
    try:
        await runner.run_files(
            "fast-export",
            "--all",
            "--show-original-ids",
            "--signed-tags=strip",
            "--tag-of-filtered-object=rewrite",
            "--reencode=yes",
            stdout=export,
        )
        found, record = await asyncio.to_thread(_filter, export, imported, erased)
        await runner.run_files("fast-import", "--force", "--quiet", f"--export-marks={marks}", stdin=imported)
        new = _marks(marks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for crash in (runner.root / ".git").glob("fast_import_crash_*"):
            crash.unlink(missing_ok=True)  # fast-import's report of a failure quotes the history it read
    moved = {old: new[mark] for mark, old in record.originals.items() if mark in new and new[mark] != old}
    code, _ = await runner.run("rev-parse", "--verify", "-q", "HEAD", ok=(0, 1))
    if code == 0:
        await runner.run("read-tree", "HEAD")  # git's index held the old blobs: it must not keep them alive
    await prune(runner)
    log.info("history rewritten: %d commit(s) changed, %d erased version(s) removed", len(moved), record.dropped_blobs)
    return Rewritten(moved, found.paths, found.keys, record.dropped_blobs)


async def prune(runner: GitRunner) -> None:
    """Expire every reflog and prune every unreachable object: what a rewrite left behind is gone."""
    await runner.run("reflog", "expire", "--expire=now", "--expire-unreachable=now", "--all")
    await runner.run("-c", "gc.reflogExpire=now", "-c", "gc.pruneExpire=now", "gc", "--prune=now", "--quiet")
