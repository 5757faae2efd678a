"""Erasing a caller for good (SPEC §14): files, index, derived cache and all of history, here and on every replica.

`erase` forgets the caller through the write path (the file removed in a commit), records the
erasure by token (`server.erasures`), then, in the git writer's turn with the service's file writes
held at the gate, rewrites every ref without the caller (`server.gitrewrite`), removes what is left
on disk, scrubs the service's own records in `.git/`, and commits one content-free commit whose
`Erased:` trailer carries only the token. Sync pushes the rewrite with a lease on the remote's old
tip. Another replica that fetches a commit with a token it has not applied, or a commit the rewrite
replaced (the old history coming back), rewrites its own history the same way before it merges:
the filter is deterministic, so the replicas' histories meet again.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

import msgspec

from server import cache, erasure, gitmerge, gitrewrite, mergefile, phone
from server.erasures import Erasure
from server.identity import Identities
from server.index import Index
from server.memory import Memory
from server.sync import Sync

log = logging.getLogger("memory_bridge.erasure")

# The fewest hex digits that name a caller by the start of their key.
SHORT_KEY_MIN = 6


class Erased(msgspec.Struct, frozen=True):
    """What one erasure did."""

    commits_rewritten: int
    versions_removed: int
    audit_commit: str | None
    lease: str | None  # the remote's old tip the rewrite is pushed over (None: no remote, or nothing there)


class Eraser:
    """One vault's erasures, and following the erasures other replicas make."""

    def __init__(self, memory: Memory, sync: Sync) -> None:
        self.memory = memory
        self.sync = sync

    def target(self, caller: str) -> str | None:
        """The key to erase for a caller named by number, key or short key (a forgotten caller's too)."""
        return caller_key(self.memory.identities, self.memory.index, caller)

    async def known(self, key: str) -> bool:
        """Whether the caller is in the index or anywhere in history (else there is nothing to erase)."""
        if self.memory.index.caller_path(key) is not None:
            return True
        runner = self.memory.git.runner
        _, out = await runner.run("log", "--all", f"-S{key}", "--format=%H", "-1", ok=(0, 128))
        return bool(out.strip())

    async def erase(self, key: str, source: str, *, block: bool) -> Erased:
        """Erase the caller with this key from the files, the index, the cache and all of history."""
        memory = self.memory
        record = memory.index.caller(key)
        keys = sorted({key, record.phone_hash} if record is not None else {key})
        if memory.index.caller_path(key) is not None:
            await memory.forget(key, source)
        now = time.time()
        tokens = [memory.erasures.token(each) for each in keys]
        for tok in tokens:
            await asyncio.to_thread(memory.erasures.add, Erasure(tok, now, block))
        memory.identities.clear_cached()
        memory.recorder.drop(keys)
        lines = [erasure.trailer(tok, block) for tok in tokens]
        # The `Source:` trailer stays the message's last line (SPEC §3); the erasure's trailers come just before it.
        audit = "erase a caller\n\n" + "".join(f"{line}\n" for line in lines) + f"Source: {source}\n"
        # No fetch or push in flight (one may take up to its timeout with a dead remote): what it did
        # would land after the rewrite. A fetch from now on is handled by `follow` and pruned by `pushed`.
        async with self.sync.network, memory.writes.gate.closed():
            erased: Erased = await memory.git.exclusive(lambda: self._rewrite(audit))
        log.info("erased a caller from the vault and its history (%d commit(s) rewritten)", erased.commits_rewritten)
        return erased

    async def _rewrite(self, audit: str | None) -> Erased:
        """Rewrite history without every erased caller; with `audit`, commit it on top. In the writer's turn."""
        memory, runner = self.memory, self.memory.git.runner
        old_tip = await gitmerge.rev(runner, self.sync.tracking) if self.sync.enabled else None
        rewritten = await gitrewrite.rewrite(runner, memory.erasures.erased)
        await asyncio.to_thread(memory.erasures.note_replaced, sorted(rewritten.moved))
        self._remove_files(rewritten.keys, rewritten.paths)
        self._scrub(rewritten.keys, rewritten.paths)
        head = await memory.git.committer.head()
        if audit is not None and head is not None:
            tree = (await runner.run("rev-parse", f"{head}^{{tree}}"))[1].strip()
            head = (await runner.run("commit-tree", tree, "-p", head, "-F", "-", stdin=audit.encode()))[1].strip()
            await runner.run("update-ref", "-m", "commit: erase a caller", "HEAD", head)
        memory.git.history_rewritten(head)
        lease = old_tip if old_tip is not None and old_tip in rewritten.moved else None
        if lease is not None:
            self.sync.lease = lease
        return Erased(len(rewritten.moved), rewritten.dropped_blobs, head if audit else None, lease)

    def _remove_files(self, keys: set[str], paths: set[str]) -> None:
        """Erased callers' files out of the working tree and the index (a replica still had them)."""
        memory = self.memory
        candidates = set(paths) | {path for key in keys if (path := memory.index.caller_path(key)) is not None}
        for relpath in sorted(candidates):
            try:
                data = memory.vault.path(relpath).read_bytes()
            except OSError:
                continue
            key = erasure.key_of(data)
            if key is not None and memory.erasures.erased(key):
                memory.vault.delete(relpath)
                memory.index.apply(relpath, None, memory.vault.next_seq())

    def _scrub(self, keys: set[str], paths: set[str]) -> None:
        """The service's own records in `.git/` that could name an erased caller: cleaned or dropped."""
        git_dir = self.memory.vault.root / ".git"
        self.memory.forgets.drop(keys)
        conflicts = git_dir / mergefile.CONFLICTS_FILE
        try:
            kept = [line for line in conflicts.read_text().splitlines(True) if not any(f'"{p}"' in line for p in paths)]
            conflicts.write_text("".join(kept))
        except FileNotFoundError:
            pass
        # Derived from files that held the caller: rebuilt from the index at the next stop.
        cache.path_for(self.memory.vault.root).unlink(missing_ok=True)
        for name in ("COMMIT_EDITMSG", "MERGE_MSG", "SQUASH_MSG"):
            (git_dir / name).unlink(missing_ok=True)
        shutil.rmtree(git_dir / "rr-cache", ignore_errors=True)  # git's recorded resolutions hold file content

    async def follow(self, tip: str) -> str | None:
        """Before a fetched `tip` is merged: apply the erasures it carries, or refuse the old history back.

        Returns the commit to merge (the remote-tracking ref's, rewritten when needed), or None when
        there is nothing new to merge: only the old history of an erasure, which the next push,
        with a lease, replaces on the remote. Called with the gate closed.
        """
        memory, runner = self.memory, self.memory.git.runner
        head = await memory.git.committer.head()
        span = f"{head}..{tip}" if head is not None else tip
        out = (await runner.run("log", "--format=%H%x00%B%x01", span))[1]
        shas: list[str] = []
        fresh: list[tuple[str, bool]] = []
        known = memory.erasures.tokens
        for entry in out.split("\x01"):
            sha, _, body = entry.strip("\n").partition("\x00")
            if not sha:
                continue
            shas.append(sha)
            fresh.extend((tok, blocked) for tok, blocked in erasure.tokens_in(body) if tok not in known)
        replaced = await asyncio.to_thread(memory.erasures.replaced)
        stale = [sha for sha in shas if sha in replaced]
        if not fresh and not stale:
            return tip
        if not fresh and len(stale) == len(shas):
            self.sync.lease = tip  # nothing new: only what was erased, still on the remote
            return None
        now = time.time()
        for tok, blocked in fresh:
            await asyncio.to_thread(memory.erasures.add, Erasure(tok, now, blocked))
        memory.identities.clear_cached()
        log.warning("the remote's history holds an erasure to apply, or erased history: rewriting this vault's history")
        await memory.git.exclusive(lambda: self._rewrite(None))
        return await gitmerge.rev(runner, self.sync.tracking)

    async def pushed(self) -> None:
        """After the rewrite replaced the remote's history: prune what fetches brought back of the old one."""
        await self.memory.git.exclusive(lambda: gitrewrite.prune(self.memory.git.runner))


def caller_key(identities: Identities, index: Index, caller: str) -> str | None:
    """A caller named by number, key or short key, known to the index or only to history: their key."""
    text = caller.strip().lower()
    if (known := identities.resolve(caller)) is not None:
        return known
    if phone.is_caller_key(text):
        return text
    if len(text) >= SHORT_KEY_MIN and all(c in "0123456789abcdef" for c in text):
        found = {key for key in index.caller_keys() if key.startswith(text)}
        return found.pop() if len(found) == 1 else None
    return identities.raw_key(caller)
