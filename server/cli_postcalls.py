"""The command line of SPEC §13: `memory-bridge inbox` (held post-call events) and `memory-bridge backfill`."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import Settings

Add = Callable[[str, Callable[..., int], str], argparse.ArgumentParser]


def register(add: Add) -> None:
    """Add `inbox` and `backfill` to the parser through `cli.build_parser`'s `add`."""
    p = add("inbox", cmd_inbox, "list the post-call events held in the inbox; --apply writes them back now")
    p.add_argument("--apply", action="store_true", help="apply every held event now, parked ones included")
    p = add("backfill", cmd_backfill, "write back phone conversations ElevenLabs holds and the vault lacks")
    p.add_argument("--since", help="only conversations started on or after this date, YYYY-MM-DD (TIMEZONE)")
    p.add_argument("--agent", help="only this agent's conversations (agent id)")


def cmd_inbox(args: argparse.Namespace, settings: Settings) -> int:
    """List held events (read-only), or apply them through the write path."""
    from server.cli import _with_service
    from server.gitlock import server_running
    from server.inbox import Inbox
    from server.postcalls import Applied, entry

    if args.apply and server_running(settings.vault_dir):
        print(
            "memory-bridge: a server is running on this vault: it applies held events itself (parked ones as "
            "soon as their caller file is fixed); stop it to apply them here",
            file=sys.stderr,
        )
        return 1
    if not args.apply:
        if not (settings.vault_dir / ".git").is_dir():
            print(f"memory-bridge: no vault at {settings.vault_dir}", file=sys.stderr)
            return 1
        held = Inbox(settings.vault_dir).load()
        for item in held:
            shown = entry(item, parked=False)
            print(f"{shown.seq}\t{shown.received}\t{shown.caller}\t{shown.conversation_id}")
        print(f"{len(held)} post-call event(s) held", file=sys.stderr)
        return 0

    async def work(service: Any) -> int:
        done = await service.postcalls.drain()
        for shown, outcome in done:
            print(f"{shown.seq}\t{outcome.value}\t{shown.caller}\t{shown.conversation_id}")
        left = service.postcalls.held
        print(f"{len(done)} event(s) tried, {left} still held", file=sys.stderr)
        return 0 if not any(outcome in (Applied.PARKED, Applied.RETRY) for _, outcome in done) else 1

    return _with_service(settings, work)


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Read ElevenLabs' conversations and write back those the vault lacks, with progress on stderr."""
    from server.backfill import BackfillReport, backfill, summary
    from server.cli import _with_service
    from server.conversations import ApiError, ConversationsApi

    if not settings.elevenlabs_api_key:
        print("memory-bridge: set ELEVENLABS_API_KEY to read ElevenLabs' conversations", file=sys.stderr)
        return 2
    since = None
    if args.since:
        try:
            day = dt.date.fromisoformat(args.since)
        except ValueError:
            print("memory-bridge: --since must be YYYY-MM-DD", file=sys.stderr)
            return 2
        since = dt.datetime.combine(day, dt.time(), settings.tz).timestamp()
    api = ConversationsApi(settings.elevenlabs_api_url, settings.elevenlabs_api_key)

    def progress(report: BackfillReport) -> None:
        print(f"backfill: {summary(report)}", file=sys.stderr, flush=True)

    async def work(service: Any) -> int:
        try:
            report = await backfill(service.memory, api, None, since=since, agent_id=args.agent, progress=progress)
        except ApiError as exc:
            print(f"memory-bridge: {exc}", file=sys.stderr)
            return 1
        print(summary(report))
        return 1 if report.failed else 0

    return _with_service(settings, work)
