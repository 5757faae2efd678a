"""Undoing one commit in a new commit, through the write path and its one git writer (SPEC §14).

Each file the commit changed goes back to its version before the commit; a file changed again
since is merged three ways, the commit's version as the base: vault files by the sync's merge rules
(`server.merge`), any other file by git's `merge-file`. A merge commit,
the first commit, or an undo that would conflict with later changes is refused with words that say so.
"""

from __future__ import annotations

import asyncio

from server import conflicts, merge, mergefile
from server.gitrun import GitRunner
from server.markdown import Kind
from server.memory import Memory
from server.writes import Change


class UndoRefused(Exception):
    """The commit cannot be undone as asked; the message says why."""


async def _show(runner: GitRunner, commit: str, path: str) -> str | None:
    code, out = await runner.run("cat-file", "blob", f"{commit}:{path}", ok=(0, 128))
    return out if code == 0 else None


def _target(runner: GitRunner, path: str, before: str | None, after: str | None, current: str | None) -> str | None:
    """The file's text once the commit is undone (None: removed); UndoRefused if later changes conflict."""
    if current == after:
        return before
    if current is None:
        raise UndoRefused(f"{path} was renamed or removed since: undoing this commit would conflict; edit it by hand")
    if current == before:
        return current
    if None in (before, after, current):
        raise UndoRefused(f"{path} was added or removed since: undoing this commit would conflict; edit it by hand")
    assert before is not None and after is not None and current is not None
    kind = mergefile.kind_for(path)
    if kind is not Kind.OTHER:
        # The vault's own merge rules, the commit's version as the base: a list line it added goes, one
        # added since stays, and a count it raised comes down by as much.
        result = merge.merge(after, current, before, kind, mergefile.git_prose_merge(runner))
        if result.conflicted:
            raise UndoRefused(f"undoing this commit would conflict with later changes to {path}; edit it by hand")
        return result.text
    text = runner.merge_file(after, current, before, 7)
    if conflicts.first_marker(text) is not None:
        raise UndoRefused(f"undoing this commit would conflict with later changes to {path}; edit it by hand")
    return text


async def undo(memory: Memory, commit: str, source: str) -> str | None:
    """Revert `commit` in a new commit; returns its id (None: nothing left to change)."""
    runner = memory.git.runner
    code, out = await runner.run("rev-parse", "--verify", "-q", f"{commit}^{{commit}}", ok=(0, 1, 128))
    if code != 0 or not out.strip():
        raise UndoRefused(f"no commit {commit!r} in the vault's history")
    sha = out.strip()
    parents = (await runner.run("rev-list", "--parents", "-n", "1", sha))[1].split()[1:]
    if len(parents) > 1:
        raise UndoRefused(f"{sha[:10]} is a merge commit: undo the changes it brought one by one")
    if not parents:
        raise UndoRefused(f"{sha[:10]} is the vault's first commit: there is nothing before it to go back to")
    subject = (await runner.run("log", "-1", "--format=%s", sha))[1].strip()
    listed = (await runner.run("diff-tree", "--no-renames", "-r", "--name-only", "-z", parents[0], sha))[1]
    paths = [path for path in listed.split("\0") if path]
    targets: dict[str, str | None] = {}
    for path in paths:
        before, after = await _show(runner, parents[0], path), await _show(runner, sha, path)
        try:
            current: str | None = memory.vault.path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        target = await asyncio.to_thread(_target, runner, path, before, after, current)
        if target != current:
            targets[path] = target
    line = f"undo {sha[:10]}: {subject}"
    written = [(path, _becomes(text)) for path, text in targets.items() if text is not None]
    if written:
        await memory.writes.write_many(written, [line], source)
    for path, text in targets.items():
        if text is None:
            await memory.writes.delete(path, line, source, _nothing)
    return await memory.git.committer.head() if targets else None


def _becomes(text: str) -> Change:
    def change(current: str | None) -> str | None:
        return text

    return change


async def _nothing() -> None:
    return None
