"""The command line for the vault people open (SPEC §14): `init`, `upgrade-vault`, `list`, `search`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import Settings

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


def register(add: Add) -> None:
    """Add this module's commands to the `memory-bridge` parser."""
    add("init", cmd_init, "create the vault (VAULT_DIR or --vault); no other command creates one")
    add("upgrade-vault", cmd_upgrade_vault, "add the Obsidian settings and callers view new vaults ship; commits")


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1
