"""`doctor`'s checks of tenants and own numbers (SPEC §12): tenant.md files, shared claims, outbound calls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from server import ownnumbers
from server.config import Settings
from server.findings import Finding, Level
from server.routing import TENANT_FILE, Directory, TenantClaims, valid_name
from server.tenants import read_claims


def own_numbers(vault_root: Path, settings: Settings) -> Iterator[Finding]:
    """Outbound calls seen while no number of ours is configured: they get the neutral answer."""
    git_dir = vault_root / ".git"
    if not ownnumbers.outbound_seen(git_dir):
        return
    if settings.agent_numbers:
        yield Finding(
            Level.OK,
            "outbound calls were seen; the agent's numbers are configured, so each callee gets their own memory",
        )
        return
    yield Finding(
        Level.WARN,
        "outbound calls were seen but no number of the agent's is configured: those calls get the neutral answer "
        "and nothing is recorded. Set AGENT_NUMBERS (or `numbers:` in tenant.md) to the agent's Twilio numbers",
    )


def tenants(settings: Settings) -> Iterator[Finding]:
    """Every tenant folder of TENANTS_DIR: its tenant.md usable, its claims its own, its outbound calls."""
    root = settings.tenants_dir
    if root is None:
        return
    if not root.is_dir():
        yield Finding(Level.WARN, f"TENANTS_DIR {root} does not exist yet: `memory-bridge serve` creates it")
        return
    claims: dict[str, TenantClaims] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / TENANT_FILE).exists():
            yield Finding(Level.WARN, f"{folder.name}: no {TENANT_FILE}, so it is not a tenant")
            continue
        if not valid_name(folder.name):
            yield Finding(Level.FIX, f"{folder.name}: not a tenant name: rename the folder (a-z, 0-9, - and _)")
            continue
        found = read_claims(settings, folder)
        if not isinstance(found, TenantClaims):  # unreadable or broken (None cannot be: it exists)
            yield Finding(Level.FIX, f"{folder.name}: {found.reason if found else TENANT_FILE + ' is gone'}")
            continue
        claims[folder.name] = found
        if not found.agent_ids and not found.numbers:
            yield Finding(
                Level.WARN, f"{folder.name}: its {TENANT_FILE} claims no agent_ids and no numbers: no call reaches it"
            )
        numbers = settings.agent_numbers + found.numbers
        yield from own_numbers(folder, _with_numbers(settings, numbers))
    for name, conflicts in sorted(Directory(claims, settings.default_region).conflicts.items()):
        for conflict in conflicts:
            yield Finding(
                Level.FIX, f"{name}: {conflict}: neither gets those calls until one {TENANT_FILE} lets go of it"
            )
    yield Finding(Level.OK, f"{len(claims)} tenant(s) in {root}")


def _with_numbers(settings: Settings, numbers: tuple[str, ...]) -> Settings:
    import msgspec

    return msgspec.structs.replace(settings, agent_numbers=numbers)
