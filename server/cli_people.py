"""The command line for the vault people open (SPEC §14): `init`, `upgrade-vault`, `show`, `preview`, `list`, `search`.

Callers are named as a person knows them: a number, a key, a short key or a name. `show` and
`preview` print for people by default and JSON with `--json`, for scripts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import Settings
    from server.identity import Identities
    from server.index import Index
    from server.records import Caller

Add = Callable[[str, Callable[..., int], str], argparse.ArgumentParser]


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    """Create the vault (folders, starter soul, git repository, first commit); an existing one is left as it is."""
    from server.cli import _with_service

    existed = (settings.vault_dir / ".git").is_dir()

    async def work(service: Any) -> int:
        return 0

    _with_service(settings, work, create=True)
    print(f"{'a vault is already at' if existed else 'created a vault at'} {settings.vault_dir}")
    return 0


def cmd_upgrade_vault(args: argparse.Namespace, settings: Settings) -> int:
    """Add what an existing vault lacks of what new vaults ship (Obsidian settings, the callers view); commit it."""
    from server import obsidian
    from server.cli import _with_service

    async def work(service: Any) -> int:
        done = obsidian.add_missing(service.memory.vault)
        for upgrade in done:
            print(upgrade.message)
        changed = [upgrade for upgrade in done if upgrade.changed]
        if changed:
            lines = [f"upgrade the vault: {upgrade.path}" for upgrade in changed]
            await service.memory.git.commit([upgrade.path for upgrade in changed], lines, "cli")
        else:
            print("the vault already has everything new vaults ship")
        return 0

    return _with_service(settings, work)


def named(index: Index, identities: Identities, text: str, *, quiet: bool = False) -> str | None:
    """The key of the caller a person means by `text`; None (and, unless `quiet`, why on stderr) if not one."""
    from server.callerfind import Lookup, find

    match = find(index, identities, text)
    if match.outcome is Lookup.FOUND:
        return match.key
    if quiet:
        return None
    if match.outcome is Lookup.AMBIGUOUS:
        print(f"{len(match.keys)} callers answer to {text!r}; name one by its key:", file=sys.stderr)
        for key in match.keys:
            print(f"  {key[:12]}  {index.caller_path(key)}", file=sys.stderr)
    else:
        print("unknown caller", file=sys.stderr)
    return None


def _title(record: Caller) -> str:
    return record.name or f"Caller {record.phone_hash[:12]}"


def readable_caller(record: Caller, path: str | None) -> str:
    """A caller's memory for a person to read."""
    out = [f"{_title(record)}  ({record.phone_hash[:12]}, {path})"]
    dates = [
        f"first {record.first_call}" if record.first_call else "",
        f"last {record.last_call}" if record.last_call else "",
    ]
    out.append(", ".join([f"{record.call_count} call(s)", *filter(None, dates)]))
    for key in ("language", "voice_id", "first_message"):
        if value := getattr(record, key):
            out.append(f"{key}: {value}")
    out += [f"{key}: {value}" for key, value in record.extra.items()]
    for heading, items in (
        ("Facts", list(record.facts)),
        ("Calls", [" ".join(filter(None, [call.date, call.time, "·", call.summary])) for call in record.calls]),
        ("Notes", list(record.notes)),
    ):
        out += ["", heading, *(f"  - {item.removeprefix('- ')}" for item in items)] if items else []
    return "\n".join(out)


def readable_answer(answer: dict[str, Any]) -> str:
    """The personalize answer for a person to read: the greeting, the variables, then the prompt."""
    agent = answer.get("conversation_config_override", {}).get("agent", {})
    out = []
    if "first_message" in agent:
        out += ["First message:", f"  {agent['first_message']}", ""]
    out.append("Variables:")
    out += [f"  {name} = {value}" for name, value in answer["dynamic_variables"].items() if name != "caller_memory"]
    if "prompt" in agent:
        out += ["", "Prompt:", agent["prompt"]["prompt"]]
    return "\n".join(out)


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print a caller's memory (readable, or JSON with --json). Reads the vault; writes nothing."""
    import json

    from server.answers import caller_json
    from server.service import open_view

    view = open_view(settings)
    key = named(view.index, view.identities, args.caller)
    record = view.index.caller(key) if key else None
    if record is None:
        return 1
    path = view.index.caller_path(record.phone_hash)
    if args.json:
        print(json.dumps(caller_json(record, path), indent=2, ensure_ascii=False))
    else:
        print(readable_caller(record, path))
    return 0


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    """Print what the personalize webhook would answer for a caller now (readable, or its exact bytes with --json)."""
    import datetime as dt
    import json

    from server.answers import preview_bytes
    from server.service import open_view

    view = open_view(settings)
    match_key = named(view.index, view.identities, args.caller, quiet=args.new)
    record = view.index.caller(match_key) if match_key else None
    if record is None and not args.new:
        print("(use --new to see the answer a new caller gets)", file=sys.stderr)
        return 1
    # The webhook sends the caller's key as user_id, known caller or new (SPEC §13).
    user_id = match_key or view.identities.identify(args.caller).key
    data = preview_bytes(view.index, settings, record, user_id, dt.datetime.now(dt.UTC))
    sys.stdout.write(data.decode() + "\n" if args.json else readable_answer(json.loads(data)) + "\n")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """List every caller: short key, calls, last call, name and file."""
    from server.callerfind import callers
    from server.service import open_view

    view = open_view(settings)
    _print_listed(list(callers(view.index)))
    return 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    """List the callers whose name, file, facts, calls or notes hold every word."""
    from server.callerfind import search
    from server.service import open_view

    view = open_view(settings)
    found = search(view.index, " ".join(args.words))
    if not found:
        print("no caller matches", file=sys.stderr)
        return 1
    _print_listed(found)
    return 0


def _print_listed(found: list[Any]) -> None:
    for listed in found:
        record = listed.caller
        last = record.last_call or "-"
        print(f"{listed.key[:12]}  {record.call_count:>5}  {last:<10}  {_title(record)}  ({listed.path})")


def register(add: Add) -> None:
    """Add this module's commands to the `memory-bridge` parser."""
    add("init", cmd_init, "create the vault (VAULT_DIR or --vault); no other command creates one")
    who = "a phone number, key, short key or name"
    p = add("show", cmd_show, "print a caller's memory")
    p.add_argument("caller", help=who)
    p.add_argument("--json", action="store_true", help="print JSON, as the API gives it, for scripts")
    p = add("preview", cmd_preview, "print what the personalize webhook would answer for a caller now")
    p.add_argument("caller", help=who)
    p.add_argument("--new", action="store_true", help="show the new-caller answer if the caller is unknown")
    p.add_argument("--json", action="store_true", help="print the webhook's exact JSON answer, for scripts")
    add("list", cmd_list, "list every caller: short key, calls, last call, name, file")
    p = add("search", cmd_search, "list the callers whose name, file, facts, calls or notes hold every word")
    p.add_argument("words", nargs="+", help="words to look for (any case)")
    add("upgrade-vault", cmd_upgrade_vault, "add the Obsidian settings and callers view new vaults ship; commits")
