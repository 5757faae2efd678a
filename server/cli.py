"""The `memory-bridge` command line (SPEC §8). Every command works without a running server.

Writes go through the same `Memory` code path as the HTTP API, so they follow the same commit
rules; a running server sees them through its watcher.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server import cli_history, cli_people, cli_postcalls, cli_tenants, filemodes, logs

if TYPE_CHECKING:  # imported where used: git starts `merge-file` once per file, and it must start fast
    from server.config import Settings
    from server.gitrun import GitRunner

EXIT_USAGE = 2


def _settings(args: argparse.Namespace) -> Settings:
    from server.config import load_settings

    overrides = {}
    if getattr(args, "vault", None):
        overrides["VAULT_DIR"] = str(args.vault)
    environ = {**os.environ, **overrides}
    return load_settings(environ, env_file=Path(args.env_file))


def _with_service(settings: Settings, work: Callable[[Any], Awaitable[int]], *, create: bool = False) -> int:
    import asyncio

    from server import gitstate
    from server.service import VaultMissing, open_service

    # Only `init` (and `serve`) make a vault: a script run from the wrong folder must not start a new one.
    if not create and not (settings.vault_dir / ".git").is_dir():
        raise VaultMissing(
            f"no vault at {settings.vault_dir}: point VAULT_DIR (or --vault) at one, or run `memory-bridge init`"
        )

    async def run() -> int:
        service = open_service(settings)
        if (busy := gitstate.state(service.memory.vault.root)) is not None:
            wait = settings.git_wait_seconds
            print(f"memory-bridge: {busy.describe()}; waiting up to {wait:g} s for it to end", file=sys.stderr)
        # The whole write under the vault's writer lock: a server or another CLI run beside this one
        # commits before or after it, never in the middle of its read, write and commit.
        with service.memory.git.lock.hold():
            await service.start(watch=False)
            try:
                return await work(service)
            finally:
                await service.stop()

    return asyncio.run(run())


# -- commands --------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the service under uvicorn, one worker, with the connection limits of `server.serving`."""
    import uvicorn

    from server.app import create_asgi
    from server.serving import uvicorn_options
    from server.timeslice import ask_for_short_slice

    # This thread runs the event loop: it is run as soon as a call wakes it (`server.timeslice`).
    ask_for_short_slice()
    uvicorn.run(create_asgi(settings), **uvicorn_options(settings))
    return 0


def cmd_hash(args: argparse.Namespace, settings: Settings) -> int:
    """Print the caller key of a number; needs only the key (PHONE_HASH_KEY or the vault's own)."""
    from server.identity import Identities
    from server.index import Index
    from server.service import read_key

    key = Identities(settings, Index(), read_key(settings)).hash_number(args.number)
    if key is None:
        print("not a usable phone number (withheld, SIP/client address, or unparseable)", file=sys.stderr)
        return 1
    print(key)
    return 0


def cmd_note(args: argparse.Namespace, settings: Settings) -> int:
    """Append to a daily note, or to a caller's notes."""
    from server.writes import WriteError

    async def work(service: Any) -> int:
        key = None
        if args.caller:
            key = cli_people.named(service.memory.index, service.memory.identities, args.caller)
            if key is None:
                return 1
        try:
            path = await service.memory.add_note(args.text, "cli", date=args.date, key=key, note_key=args.key)
        except WriteError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"saved to {path}")
        return 0

    return _with_service(settings, work)


def cmd_remember(args: argparse.Namespace, settings: Settings) -> int:
    """Add a fact to a caller (a phone number creates the caller if new)."""
    from server.writes import WriteError

    async def work(service: Any) -> int:
        known = cli_people.named(service.memory.index, service.memory.identities, args.caller, quiet=True)
        target = service.memory.identities.write_target(known or args.caller)
        if target is None:
            print("unknown caller", file=sys.stderr)
            return 1
        try:
            path = await service.memory.add_fact(target.key, args.fact, "cli", e164=target.e164, legacy=target.legacy)
        except WriteError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"saved to {path}")
        return 0

    return _with_service(settings, work)


def _progress(label: str) -> Callable[[int, int], None]:
    """A one-line progress bar on stderr (redrawn in place on a terminal, every 10% otherwise)."""
    tty = sys.stderr.isatty()
    shown = -1

    def show(done: int, total: int) -> None:
        nonlocal shown
        percent = done * 100 // max(total, 1)
        if (not tty and percent // 10 == shown // 10 and done != total) or percent == shown:
            return
        shown = percent
        bar = "#" * (percent * 30 // 100)
        end = "\n" if done == total or not tty else ""
        print(f"\r{label} [{bar:<30}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def cmd_import_seed(args: argparse.Namespace, settings: Settings) -> int:
    """Import the predecessor's data directory."""
    from server.importer import import_seed
    from server.seed import SeedError, read_seed

    try:
        seed = read_seed(Path(args.data_dir))
    except SeedError as exc:
        print(exc, file=sys.stderr)
        return 1

    async def work(service: Any) -> int:
        report = await import_seed(service.memory, seed, _progress("importing"))
        print(
            f"imported {report.callers} caller(s) and {report.daily_notes} daily note(s); "
            f"{report.changed} file(s) changed, {report.skipped} entr(y/ies) skipped"
        )
        return 0

    return _with_service(settings, work)


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    """Check configuration, vault, git and secrets, and say what to fix."""
    from server.doctor import diagnose
    from server.findings import Level

    problems = 0
    for finding in diagnose(settings):
        print(f"{finding.level.value:>4}  {finding.message}")
        problems += finding.level is Level.FIX
    print("all good" if not problems else f"{problems} thing(s) to fix")
    return 1 if problems else 0


def cmd_merge_file(args: argparse.Namespace) -> int:
    """git's merge driver for one vault file: writes the merge over OURS; non-zero only if it could not merge."""
    logs.configure_command("memory-bridge merge-file")
    from server.mergefile import run_driver

    # git runs its drivers in the top folder of the work tree.
    return run_driver(Path(args.base), Path(args.ours), Path(args.theirs), args.path, _runner(Path(".")))


def _runner(root: Path) -> GitRunner:
    """Git in a repository that is not the service's vault (no settings: the defaults' identity; it never commits)."""
    from server.gitrun import GitRunner

    return GitRunner(root, "memory-bridge", "memory-bridge@localhost")


def cmd_merge_driver_install(args: argparse.Namespace) -> int:
    """Register the merge driver in a clone: its command in `.git/config`, its paths in `.gitattributes`."""
    from server.gitrun import GitError
    from server.mergedriver import LAPTOP_COMMAND, install

    try:
        top = _runner(Path(args.repo)).run_sync("rev-parse", "--show-toplevel").stdout.strip()
        installed = install(_runner(Path(top)), args.command or LAPTOP_COMMAND)
    except GitError as exc:
        print(f"memory-bridge: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"memory-bridge: could not write .gitattributes: {exc}", file=sys.stderr)
        return 1
    print(f"merge driver {'registered' if installed.config_written else 'already registered'} in .git/config")
    for line in installed.attribute_lines:
        print(f"added to .gitattributes: {line}")
    if installed.attribute_lines:
        print("commit .gitattributes so that every clone merges these files the same way")
    return 0


# -- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with `--help` on every command."""
    parser = argparse.ArgumentParser(
        prog="memory-bridge",
        description="Persistent caller memory for ElevenLabs phone agents, kept in a git-backed markdown vault.",
    )
    parser.add_argument("--vault", type=Path, help="the vault folder (default: $VAULT_DIR or ./vault)")
    parser.add_argument("--env-file", default=".env", help="settings file to read (default: .env)")
    cli_tenants.register(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[..., int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    add("serve", cmd_serve, "run the service (uvicorn, one worker)")
    p = add("note", cmd_note, "append to today's (or --date's) daily note, or to a caller's notes; commits")
    p.add_argument("text", help="the note")
    p.add_argument("--caller", help="a phone number, key, short key or name: add to that caller's notes instead")
    p.add_argument("--date", help="YYYY-MM-DD (default: today in TIMEZONE)")
    p.add_argument("--key", help="replace the note's line marked with this key (added the first time), not add one")
    p = add("remember", cmd_remember, "add a fact to a caller; commits")
    p.add_argument("caller", help="a phone number, key, short key or name (a new number makes a new caller)")
    p.add_argument("fact", help="the fact, one short sentence")
    p = add("hash", cmd_hash, "print the caller key (phone hash) for a number")
    p.add_argument("number", help="a phone number, E.164 or national (uses DEFAULT_REGION)")
    p = add("import-seed", cmd_import_seed, "import the predecessor's data/ (sessions, memories, notes); safe to rerun")
    p.add_argument("data_dir", help="the predecessor's data directory")
    add("doctor", cmd_doctor, "check config, vault, git and secrets; say what to fix")
    cli_history.register(add)
    cli_people.register(add)
    cli_postcalls.register(add)
    # Commands git runs, or that set up a person's clone: no settings, no vault of the service's.
    p = add("merge-file", cmd_merge_file, "git's merge driver for one vault file (%%O %%A %%B %%P); writes OURS")
    p.set_defaults(plain=True)
    for name, what in (
        ("base", "%%O"),
        ("ours", "%%A, overwritten with the result"),
        ("theirs", "%%B"),
        ("path", "%%P"),
    ):
        p.add_argument(name, help=what)
    p = add("merge-driver", cmd_merge_driver_install, "set up the vault's merge driver in a git clone")
    p.set_defaults(plain=True)
    p.add_argument("action", choices=["install"], help="install: register it (.git/config, .gitattributes)")
    p.add_argument("--repo", default=".", help="the clone (default: the current directory's repository)")
    p.add_argument("--command", help="the driver command git runs (default: memory-bridge on PATH)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `memory-bridge` console script."""
    # Before anything can create a file: the vault (and git's files in it) are for this user alone.
    filemodes.keep_new_files_private()
    args = build_parser().parse_args(argv)
    if getattr(args, "plain", False):
        return int(args.func(args))
    import msgspec

    from server.config import ConfigError

    try:
        settings = cli_tenants.for_command(_settings(args), args)
    except ConfigError as exc:
        print(f"memory-bridge: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Commands other than `serve` print their own results and their own errors, each on one line: the
    # log (the same failure in the service's longer words) speaks up only when something crashes.
    logs.configure(settings if args.command == "serve" else msgspec.structs.replace(settings, log_level="CRITICAL"))
    from server.gitrun import GitError
    from server.gitstate import OperationInProgress
    from server.service import VaultMissing
    from server.vault import DiskError

    try:
        return int(args.func(args, settings))
    except VaultMissing as exc:
        print(f"memory-bridge: {exc}", file=sys.stderr)
    except GitError as exc:
        # git's own words, on one line: what failed is the person's to see, not a traceback.
        print(f"memory-bridge: {' '.join(str(exc).split())}", file=sys.stderr)
    except (DiskError, OperationInProgress) as exc:
        print(f"memory-bridge: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
