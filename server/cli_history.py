"""The command line of a caller's history (SPEC §14): `forget` (and `--purge`, `--block`), `history`, `undo`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import Settings

Adder = Callable[[str, Callable[..., int], str], argparse.ArgumentParser]


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    """Forget a caller; with --purge (or --block) erase them from all of history too."""
    from server.cli import _with_service
    from server.gitrun import GitError

    async def work(service: Any) -> int:
        if not (args.purge or args.block):
            key = service.memory.identities.resolve(args.caller)
            if key is None or not await service.memory.forget(key, "cli"):
                print("unknown caller", file=sys.stderr)
                return 1
            print(f"forgotten: the file is removed in a commit (history keeps it; --purge erases it): {key[:12]}")
            return 0
        key = service.eraser.target(args.caller)
        if key is None or not (args.block or await service.eraser.known(key)):
            print("unknown caller", file=sys.stderr)
            return 1
        erased = await service.eraser.erase(key, "cli", block=args.block)
        print(f"erased from the vault and all of its history ({erased.commits_rewritten} commit(s) rewritten)")
        if args.block:
            print("on the do-not-remember list: later calls from this number get the neutral answer")
        if service.sync.enabled:
            try:
                await service.sync.round(fetch=False)
                print("the rewritten history is pushed to the remote")
            except GitError as exc:
                print(f"the remote was not updated yet (the service pushes it): {' '.join(str(exc).split())}")
        return 0

    return _with_service(settings, work)


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    """Print a caller's changes, newest first, across renames of their file."""
    from server import history
    from server.eraser import caller_key
    from server.gitrun import GitRunner
    from server.service import open_view

    view = open_view(settings)
    key = caller_key(view.identities, view.index, args.caller)
    if key is None:
        print("unknown caller", file=sys.stderr)
        return 1
    runner = GitRunner(settings.vault_dir, settings.git_author_name, settings.git_author_email)
    changes = history.of_caller(runner, key)
    if not changes:
        print("no changes recorded for this caller", file=sys.stderr)
        return 1
    for change in changes:
        where = ", ".join(change.paths)
        print(f"{change.commit[:10]}  {change.date}  {change.author:<16}  {change.subject}  [{where}]")
    return 0


def cmd_undo(args: argparse.Namespace, settings: Settings) -> int:
    """Revert one commit in a new commit, through the service's one git writer."""
    from server.cli import _with_service
    from server.undo import UndoRefused, undo

    async def work(service: Any) -> int:
        try:
            sha = await undo(service.memory, args.commit, "cli")
        except UndoRefused as exc:
            print(f"memory-bridge: {exc}", file=sys.stderr)
            return 1
        print(f"undone in commit {sha[:10] if sha else '(nothing to change)'}")
        return 0

    return _with_service(settings, work)


def register(add: Adder) -> None:
    """Add `forget`, `history` and `undo` to the command line."""
    p = add("forget", cmd_forget, "forget a caller; --purge erases them from all of history, --block for good")
    p.add_argument("caller", help="a phone number, caller key or short key")
    p.add_argument("--purge", action="store_true", help="erase the caller from all of history, here and on the remote")
    p.add_argument("--block", action="store_true", help="--purge, and remember nothing of later calls from them")
    p = add("history", cmd_history, "a caller's changes, newest first, across renames of their file")
    p.add_argument("caller", help="a phone number, caller key or short key")
    p = add("undo", cmd_undo, "revert one commit in a new commit (refuses a merge, or a revert that would conflict)")
    p.add_argument("commit", help="the commit (as `history` or `git log` shows it)")
