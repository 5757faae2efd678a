"""Merging another line of history into the branch: the remote's, or acknowledged commits people's git dropped.

Runs git's own `merge` in the live working tree, so the vault's markdown files are merged by the
project's merge driver (registered for the paths `.gitattributes` names) and every other file by
git, the remote's side winning a conflict (`-X theirs`). Whatever git leaves unmerged (a file
changed on one side and deleted on the other) is settled here: the deletion wins, because a caller
forgotten on one machine must stay forgotten. A merge that cannot be finished is aborted, leaving
the branch and the files as they were. Only the git writer calls this, inside its lock (SPEC §3).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path

from server.gitrun import GitError, GitRunner

log = logging.getLogger("memory_bridge.git")

# Present while the service's own merge runs: a merge found half-done at start-up with it is ours to abort.
_MARK = Path(".git", "memory-bridge", "merging")


class MergeOutcome(enum.Enum):
    """What a merge did."""

    UP_TO_DATE = "up to date"  # the branch has everything the other side has
    FAST_FORWARD = "fast-forward"  # the branch only moved forward to the other side
    MERGED = "merged"  # a merge commit joins both sides
    REFUSED = "refused"  # nothing changed; `detail` says why


@dataclass(frozen=True)
class Merged:
    """A merge's outcome, the branch's commit after it, and the files it changed."""

    outcome: MergeOutcome
    head: str | None
    changed: tuple[str, ...] = ()
    detail: str = ""


async def rev(runner: GitRunner, ref: str) -> str | None:
    """The commit `ref` names, or None if it names none."""
    code, out = await runner.run("rev-parse", "--verify", "-q", f"{ref}^{{commit}}", ok=(0, 1))
    return out.strip() or None if code == 0 else None


async def is_ancestor(runner: GitRunner, older: str, newer: str) -> bool:
    """Whether commit `older` is in the history of `newer`."""
    code, _ = await runner.run("merge-base", "--is-ancestor", older, newer, ok=(0, 1))
    return code == 0


async def related(runner: GitRunner, one: str, other: str) -> bool:
    """Whether two commits share any history (an unrelated remote is refused, never merged)."""
    code, _ = await runner.run("merge-base", one, other, ok=(0, 1))
    return code == 0


async def dirty_paths(runner: GitRunner) -> list[str]:
    """Files that differ from the branch's last commit, untracked ones included (vault-relative)."""
    _, out = await runner.run("status", "--porcelain", "-z", "--untracked-files=all", "--no-renames")
    return [entry[3:] for entry in out.split("\0") if len(entry) > 3]


async def merge_in(runner: GitRunner, ref: str, subject: str, source: str) -> Merged:
    """Merge commit `ref` into the checked-out branch; the working tree must have no uncommitted change in its way."""
    head = await rev(runner, "HEAD")
    other = await rev(runner, ref)
    if other is None:
        return Merged(MergeOutcome.REFUSED, head, detail=f"{ref} names no commit")
    if head is None or await is_ancestor(runner, other, head):
        return Merged(MergeOutcome.UP_TO_DATE, head)
    if not await related(runner, head, other):
        return Merged(MergeOutcome.REFUSED, head, detail="the two histories are unrelated")
    message = f"{subject}\n\nSource: {source}\n"
    mark = runner.root / _MARK
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()
    try:
        return await _merge(runner, head, other, message)
    finally:
        mark.unlink(missing_ok=True)


def merging(root: Path) -> bool:
    """Whether the service's own merge is running in the vault at `root`: git is rewriting its files."""
    return (root / _MARK).exists()


def recover_interrupted(runner: GitRunner) -> bool:
    """At start-up, no server running: undo a merge the service was killed in the middle of (never a person's).

    True if there was one. Git's index lock, if the kill left one, is already settled (`GitRunner.settle_lock`).
    """
    mark = runner.root / _MARK
    if not mark.exists():
        return False
    merging = runner.run_sync("rev-parse", "-q", "--verify", "MERGE_HEAD", check=False).returncode == 0
    if merging:
        runner.run_sync("merge", "--abort", check=False)
    log.warning(
        "a merge was interrupted when the service stopped%s; the next sync round merges again",
        " (its half-done state aborted)" if merging else "",
    )
    mark.unlink(missing_ok=True)
    return True


async def _merge(runner: GitRunner, head: str, other: str, message: str) -> Merged:
    code, out = await runner.run(
        "merge", "--no-edit", "--no-verify", "--no-stat", "-X", "theirs", "-m", message, other, ok=(0, 1, 2, 128)
    )
    if code != 0 and not await _merging(runner):
        return Merged(MergeOutcome.REFUSED, head, detail=" ".join(out.split())[:300] or f"git merge exited {code}")
    if code != 0:
        try:
            await _settle_unmerged(runner)
            await runner.run("commit", "--no-edit", "--no-verify", "-q")
        except GitError as exc:
            await runner.run("merge", "--abort", ok=(0, 128))
            return Merged(MergeOutcome.REFUSED, head, detail=str(exc))
    new = await rev(runner, "HEAD")
    _, names = await runner.run("diff", "--name-only", "-z", "--no-renames", head, "HEAD")
    changed = tuple(name for name in names.split("\0") if name)
    outcome = MergeOutcome.FAST_FORWARD if new == other else MergeOutcome.MERGED
    return Merged(outcome, new, changed)


async def _merging(runner: GitRunner) -> bool:
    code, _ = await runner.run("rev-parse", "-q", "--verify", "MERGE_HEAD", ok=(0, 1))
    return code == 0


async def _settle_unmerged(runner: GitRunner) -> None:
    """Resolve what git left unmerged: the remote's version of a file both changed, a deletion over a change."""
    _, out = await runner.run("ls-files", "-u", "-z")
    stages: dict[str, set[str]] = {}
    for entry in out.split("\0"):
        if entry:
            info, path = entry.split("\t", 1)
            stages.setdefault(path, set()).add(info.split()[2])
    theirs = [path for path, found in stages.items() if {"2", "3"} <= found]
    gone = [path for path, found in stages.items() if not {"2", "3"} <= found]
    paths_in = ("--pathspec-from-file=-", "--pathspec-file-nul")
    if theirs:
        await runner.run("checkout", "--theirs", *paths_in, stdin=_nul(theirs))
        await runner.run("add", *paths_in, stdin=_nul(theirs))
    if gone:
        await runner.run("rm", "-q", "--ignore-unmatch", *paths_in, stdin=_nul(gone))


def _nul(paths: list[str]) -> bytes:
    return "".join(f"{path}\0" for path in paths).encode()
