"""One commit from what is staged, by git's plumbing; the branch's head; the commit message (SPEC §3).

The git writer decides what goes into a commit and when; this module makes it: `write-tree`,
`commit-tree`, and an `update-ref` that moves the branch only if nobody moved it meanwhile.
"""

from __future__ import annotations

import re

from server.gitrun import GitError, GitRunner
from server.gitstate import Operations

# A commit message lists at most this many changes, then says how many more: a message (and its
# memory) must not grow with a commit of a hundred thousand files.
MAX_LISTED = 200


class Committer:
    """Makes commits in one vault from what is staged in its index."""

    def __init__(self, runner: GitRunner, operations: Operations) -> None:
        self.runner = runner
        self.operations = operations
        # (commit, its tree) of the last commit made or looked up: to see when there is nothing to commit.
        self._last_tree: tuple[str, str] | None = None

    def head_from_files(self) -> str | None:
        """The commit HEAD points to, read from .git without starting a process (None: ask git)."""
        git_dir = self.runner.root / ".git"
        try:
            head = (git_dir / "HEAD").read_text().strip()
            if head.startswith("ref: "):
                head = (git_dir / head[5:]).read_text().strip()
        except OSError:
            return None
        return head if len(head) == 40 else None

    async def head(self) -> str | None:
        """The branch's commit (None before the first), from .git's files when they have it."""
        if (head := self.head_from_files()) is not None:
            return head
        # git knows when the files do not say (refs packed by a gc, say).
        code, out = await self.runner.run("rev-parse", "--verify", "-q", "HEAD", ok=(0, 1))
        return out.strip() or None if code == 0 else None

    def forget_tree(self) -> None:
        """The branch moved by other means (a merge): what was known of its tree is stale."""
        self._last_tree = None

    async def commit(self, text: str) -> str | None:
        """Commit what is staged with message `text`; the new commit, or None when the tree is HEAD's already.

        Plumbing rather than `git commit`, which would first stat every file of the vault to refresh
        the index (thousands of callers) and then start git's housekeeping: a third of the cost.
        """
        tree = (await self.runner.run("write-tree"))[1].strip()
        parent = await self.head()
        if parent is not None and tree == await self._tree_of(parent):
            return None  # nothing to commit: a person's git, or an earlier batch, already has it
        parents = ("-p", parent) if parent is not None else ()
        sha = (await self.runner.run("commit-tree", tree, *parents, "-F", "-", stdin=text.encode()))[1].strip()
        if (began := self.operations.current()) is not None:
            # A person's git began during this commit and may have taken what was staged: none is made
            # under it, and the changes, not acknowledged, are committed with the next commit after it.
            raise GitError(f"not committed: a git {began.value} began in the vault during the commit")
        # Moves HEAD's branch only if it is still `parent` (a person's commit meanwhile fails this one).
        subject = text.split("\n", 1)[0]
        await self.runner.run("update-ref", "-m", f"commit: {subject}", "HEAD", sha, *(parent,) if parent else ())
        self._last_tree = (sha, tree)
        return sha

    async def _tree_of(self, commit: str) -> str:
        if self._last_tree is None or self._last_tree[0] != commit:
            self._last_tree = (commit, (await self.runner.run("rev-parse", f"{commit}^{{tree}}"))[1].strip())
        return self._last_tree[1]


def message(lines: list[str], source: str, more: int = 0) -> str:
    """A commit message: what changed for whom (by short hash), a trailer, and the changes listed.

    At most MAX_LISTED changes are listed; the rest, and `more` changes without a line of their own,
    are counted ("... and K more").
    """
    # One line per change: a file name with a newline in it must not be able to fake a trailer.
    listed = [" ".join(line.split()) for line in lines[:MAX_LISTED]]
    total = len(lines) + more
    if total == 1:
        subject, body = listed[0], ""
    else:
        subject = f"{total} changes"
        rest = [f"- ... and {total - len(listed)} more"] if total > len(listed) else []
        body = "\n".join([*(f"- {line}" for line in listed), *rest]) + "\n\n"
    return f"{subject}\n\n{body}Source: {source}\n"


# A name is shown as at most this many characters; one with a run of digits like a phone number's is not shown.
_NAME_CHARS = 60
_DIGITS = re.compile(r"\d[\d\s().-]{5,}\d")


def caller_label(name: str | None, key: str) -> str:
    """A caller as people read them in a commit subject: `Maria Lopez (5f1c9a0e1234)`, or the short key alone."""
    shown = " ".join((name or "").split())[:_NAME_CHARS].strip()
    if not shown or _DIGITS.search(shown):
        return key[:12]
    return f"{shown} ({key[:12]})"
