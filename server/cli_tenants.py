"""The command line's `--tenant` (SPEC §12): which tenant of TENANTS_DIR a command works on."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.config import Settings


def register(parser: argparse.ArgumentParser) -> None:
    """Add `--tenant` to the command line."""
    parser.add_argument("--tenant", help="with TENANTS_DIR: the tenant (its folder's name); left out with one tenant")


def for_command(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings a command runs with: with TENANTS_DIR, those of the tenant it names (or the only one).

    `doctor` without `--tenant` checks every tenant. Raises ConfigError when the tenant is unknown or
    not named while there are several.
    """
    from server.config import ConfigError
    from server.routing import TENANT_FILE, TenantClaims, valid_name
    from server.tenants import read_claims, tenant_settings

    name: str | None = getattr(args, "tenant", None)
    root = settings.tenants_dir
    if root is None:
        if name is not None:
            raise ConfigError("--tenant needs TENANTS_DIR: set it to the folder of the tenants' vaults")
        return settings
    if name is None:
        if args.command in {"doctor", "serve"}:
            return settings
        names = sorted(p.parent.name for p in root.glob(f"*/{TENANT_FILE}")) if root.is_dir() else []
        if len(names) != 1:
            raise ConfigError(f"TENANTS_DIR holds {len(names)} tenants: name one with --tenant ({', '.join(names)})")
        name = names[0]
    if not valid_name(name) or not (root / name / TENANT_FILE).is_file():
        raise ConfigError(f"no tenant {name!r} in TENANTS_DIR ({root}): its folder must hold a {TENANT_FILE}")
    claims = read_claims(settings, root / name)
    return tenant_settings(settings, name, claims if isinstance(claims, TenantClaims) else TenantClaims())
