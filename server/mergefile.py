"""The merge driver git runs on one vault file (`memory-bridge merge-file`), and the record of what it resolved.

For each file both sides changed, among the paths `.gitattributes` names (`server.mergedriver`), git
runs `memory-bridge merge-file %O %A %B %P`: the base, ours (the branch being merged into: the
local vault), theirs (the branch being merged: the remote) and the file's path. This merges them by
`server.merge`'s rules, with git's own three-way merge for prose, writes the result over %A and
exits 0: it never leaves conflict markers. What it resolved that a person should look at is
appended to `.git/memory-bridge/merge-conflicts.jsonl`, which the service reads back for `/health`.
git starts it once per file, so it imports only what a merge needs.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import msgspec

from server import merge
from server.gitrun import GitError, GitRunner
from server.markdown import Kind, kind_of

log = logging.getLogger("memory_bridge.merge")

CONFLICTS_FILE = Path("memory-bridge") / "merge-conflicts.jsonl"
SOULS = "souls"  # an agent's own soul, `souls/<agent>.md` (SPEC §12)
EXIT_MERGED = 0
EXIT_FAILED = 1  # git then leaves the file conflicted, as ours' version, for a person
# Reading the record back reads at most its last this many bytes: /health shows the latest ones.
_TAIL_BYTES = 256 * 1024


class MergeConflict(msgspec.Struct, frozen=True, kw_only=True):
    """What the driver resolved in one file that a person should look at, and when (one JSON line)."""

    path: str
    at: str  # UTC, ISO 8601
    remote_keys: tuple[str, ...] = ()  # both sides changed these keys: the remote's value was kept
    prose_kept_twice: int = 0  # passages both sides changed, kept in both versions one after the other
    method: merge.Method = merge.Method.RULES


def git_prose_merge(runner: GitRunner) -> merge.ProseMerge:
    """git's line-based three-way merge (`git merge-file --diff3`), in the shape `server.merge` takes."""

    def prose(base: str, ours: str, theirs: str) -> list[merge.Chunk]:
        size = merge.marker_size(base, ours, theirs)
        return merge.parse_diff3(runner.merge_file(base, ours, theirs, size), size)

    return prose


def kind_for(relpath: str) -> Kind:
    """Which rules a path's file merges by: its kind in the vault; an agent's `souls/<name>.md` is a soul."""
    parts = relpath.split("/")
    if len(parts) == 2 and parts[0] == SOULS and parts[1].endswith(".md"):
        return Kind.SOUL
    return kind_of(relpath)


def merge_file(base: Path, ours: Path, theirs: Path, relpath: str, prose: merge.ProseMerge) -> merge.MergeResult:
    """Merge git's three versions of the file at `relpath`, writing the result over `ours`."""
    # Any bytes round-trip: a file that is not UTF-8 is merged as it is, not refused.
    base_text, ours_text, theirs_text = (
        p.read_bytes().decode("utf-8", "surrogateescape") for p in (base, ours, theirs)
    )
    result = merge.merge(base_text, ours_text, theirs_text, kind_for(relpath), prose)
    ours.write_bytes(result.text.encode("utf-8", "surrogateescape"))
    return result


def run_driver(base: Path, ours: Path, theirs: Path, relpath: str, runner: GitRunner) -> int:
    """`memory-bridge merge-file`: merge, record what conflicted, log one line. Non-zero only if it could not merge."""
    try:
        result = merge_file(base, ours, theirs, relpath, git_prose_merge(runner))
    except (OSError, GitError) as exc:
        log.error("could not merge %s; git leaves it conflicted: %s", relpath, " ".join(str(exc).split()))
        return EXIT_FAILED
    except Exception as exc:  # a bug of ours: git must still get an answer, and the log no file content
        log.error("could not merge %s; git leaves it conflicted: %s", relpath, type(exc).__name__)
        return EXIT_FAILED
    if not result.conflicted:
        log.info("merged %s", relpath)
        return EXIT_MERGED
    conflict = MergeConflict(
        path=relpath,
        at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        remote_keys=result.remote_keys,
        prose_kept_twice=result.prose_kept_twice,
        method=result.method,
    )
    log.warning("%s", describe(conflict))
    try:
        record(git_dir(runner), conflict)
    except (OSError, GitError) as exc:  # the merge itself is done and good
        log.error("could not record the conflict in %s: %s", relpath, " ".join(str(exc).split()))
    return EXIT_MERGED


def describe(conflict: MergeConflict) -> str:
    """One line saying what was resolved in a file, for the log (key names and counts, no content)."""
    parts = []
    if conflict.remote_keys:
        parts.append(f"both sides changed {', '.join(conflict.remote_keys)}: kept the remote's value")
    if conflict.prose_kept_twice:
        parts.append(f"{conflict.prose_kept_twice} passage(s) both sides changed kept in both versions")
    how = (
        " (frontmatter unreadable on a side: merged as text)"
        if conflict.method is merge.Method.WHOLE_FILE_AS_PROSE
        else ""
    )
    return f"merged {conflict.path}{how}; {'; '.join(parts)}; for a person to look at"


def git_dir(runner: GitRunner) -> Path:
    """The repository git runs the driver for: GIT_DIR when git was told one, else the one at `runner.root`."""
    from server.config import git_dir_from_environment  # only now: most merges have nothing to record

    found = git_dir_from_environment()
    if found is None:
        found = Path(runner.run_sync("rev-parse", "--absolute-git-dir").stdout.strip())
    return found if found.is_absolute() else runner.root / found


def record(git_dir: Path, conflict: MergeConflict) -> None:
    """Append one resolved conflict to the repository's record (one JSON line)."""
    path = git_dir / CONFLICTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write of one short line to a file opened for appending: never interleaved with another's.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, msgspec.json.encode(conflict) + b"\n")
    finally:
        os.close(fd)


def read_conflicts(git_dir: Path, limit: int = 50) -> list[MergeConflict]:
    """The latest conflicts the driver resolved in a repository, oldest first; none if it never recorded one."""
    path = git_dir / CONFLICTS_FILE
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL_BYTES))
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if size > _TAIL_BYTES:
        lines = lines[1:]  # read from the middle of a line
    found = []
    for line in lines:
        try:
            found.append(msgspec.json.decode(line, type=MergeConflict))
        except msgspec.DecodeError:  # an empty, cut or foreign line
            continue
    return found[-limit:]
