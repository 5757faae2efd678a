"""Which tenant a request belongs to (SPEC §12): `tenant.md` claims parsed, and a request routed, pure.

Each tenant's `tenant.md` claims agent ids and phone numbers. A request's `agent_id` picks the
tenant, else its called number. A claim two tenants make is given to neither: both are reported, and
the requests it would have routed are unclaimed. Nothing here touches the disk or reads the clock.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping

import msgspec

from server import phone
from server.conflicts import first_marker
from server.parse import VaultFileError, split_frontmatter
from server.remote import without_credentials

TENANT_FILE = "tenant.md"
# A tenant's name is its folder's, and appears in URLs (`/t/{tenant}/api/...`) and commit-free logs.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_AGENT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]+$")  # as GIT_BRANCH


class TenantFileError(ValueError):
    """A `tenant.md` that cannot be used as it is; the message says why, for `/health` and `doctor`."""


class TenantClaims(msgspec.Struct, frozen=True):
    """What one `tenant.md` claims: agent ids, and phone numbers in E.164."""

    agent_ids: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    git_remote: str | None = None  # the tenant's own remote (SPEC §11); never with credentials in it
    git_branch: str | None = None


class By(enum.Enum):
    """What routed a request to its tenant, or why none was found."""

    AGENT = "agent_id"
    NUMBER = "called_number"
    ONLY = "only tenant"  # one vault: every request is its own
    UNCLAIMED = "unclaimed"


class Route(msgspec.Struct, frozen=True):
    """A request's tenant (None: unclaimed) and what decided it."""

    tenant: str | None
    by: By


def valid_name(name: str) -> bool:
    """Whether a folder's name may be a tenant's: lowercase letters, digits, `-` and `_`."""
    return bool(_NAME.fullmatch(name))


def _strings(meta: Mapping[str, object], key: str) -> list[str]:
    value = meta.get(key)
    if value is None:
        return []
    if isinstance(value, str | int):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(item, str | int) and not isinstance(item, bool) for item in value
    ):
        raise TenantFileError(f"`{key}` must be a list of text items")
    return [str(item).strip() for item in value if str(item).strip()]


def parse_tenant(text: str, region: str | None) -> TenantClaims:
    """A `tenant.md`'s claims; raises TenantFileError when its frontmatter cannot be used."""
    if (line := first_marker(text)) is not None:
        raise TenantFileError(f"has conflict markers (line {line}): resolve the merge")
    try:
        meta, _ = split_frontmatter(text)
    except VaultFileError as exc:
        raise TenantFileError(str(exc)) from None
    agent_ids = _strings(meta, "agent_ids")
    for agent in agent_ids:
        if not _AGENT_ID.fullmatch(agent):
            raise TenantFileError("`agent_ids` holds an entry that is not an agent id")
    numbers: list[str] = []
    for number in _strings(meta, "numbers"):
        parsed = phone.classify(number, region)
        if parsed.e164 is None:
            # Never the entry itself: it may be a phone number, which no log line or /health may show.
            raise TenantFileError(f"`numbers` entry {len(numbers) + 1} is not a phone number")
        numbers.append(parsed.e164)
    remote, branch = _text(meta, "git_remote"), _text(meta, "git_branch")
    if remote is not None and without_credentials(remote) != remote:
        # tenant.md is committed and pushed: a password in it would be in the history for good.
        raise TenantFileError("`git_remote` holds credentials: use a credential helper or ssh instead")
    if branch is not None and not _BRANCH.fullmatch(branch):
        raise TenantFileError("`git_branch` is not a branch name")
    return TenantClaims(tuple(dict.fromkeys(agent_ids)), tuple(dict.fromkeys(numbers)), remote, branch)


def _text(meta: Mapping[str, object], key: str) -> str | None:
    value = meta.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise TenantFileError(f"`{key}` must be text")
    return value.strip()


class Directory:
    """Every tenant's claims, merged: agent ids and numbers to tenants, and the claims refused."""

    def __init__(self, claims: Mapping[str, TenantClaims], region: str | None = None) -> None:
        self.region = region
        agents: dict[str, list[str]] = {}
        numbers: dict[str, list[str]] = {}
        for name in sorted(claims):
            for agent in claims[name].agent_ids:
                agents.setdefault(agent, []).append(name)
            for number in claims[name].numbers:
                numbers.setdefault(number, []).append(name)
        self.agents = {agent: names[0] for agent, names in agents.items() if len(names) == 1}
        self.numbers = {number: names[0] for number, names in numbers.items() if len(names) == 1}
        # Per tenant, the claims it shares with another tenant (refused for both), in words for /health.
        self.conflicts: dict[str, list[str]] = {}
        for agent, names in agents.items():
            for name in names if len(names) > 1 else ():
                others = ", ".join(n for n in names if n != name)
                self.conflicts.setdefault(name, []).append(f"agent id {agent} is also claimed by {others}")
        for names in (names for names in numbers.values() if len(names) > 1):
            for name in names:
                others = ", ".join(n for n in names if n != name)
                self.conflicts.setdefault(name, []).append(f"one of its numbers is also claimed by {others}")
        self._number = functools.lru_cache(maxsize=4096)(self._by_number)

    def route(self, agent_id: object, called_number: object) -> Route:
        """The tenant of a request: by its agent id, else by its called number; unclaimed otherwise."""
        if isinstance(agent_id, str) and agent_id:
            tenant = self.agents.get(agent_id)
            if tenant is not None:
                return Route(tenant, By.AGENT)
        if isinstance(called_number, str) and len(called_number) <= phone.MAX_CHARS:
            tenant = self._number(called_number)
            if tenant is not None:
                return Route(tenant, By.NUMBER)
        return Route(None, By.UNCLAIMED)

    def _by_number(self, called_number: str) -> str | None:
        e164 = phone.classify(called_number, self.region).e164
        return self.numbers.get(e164) if e164 is not None else None


def soul_for(agent_id: object, souls: Mapping[str, tuple[str, ...]]) -> str | None:
    """The soul file (`souls/<name>.md`) whose `agent_ids` lists this agent, or None for `soul.md`.

    `souls` maps each soul file to the agent ids it lists; when two list the same agent, the first
    by path wins (and the index reports the other).
    """
    if not isinstance(agent_id, str) or not agent_id:
        return None
    for relpath in sorted(souls):
        if agent_id in souls[relpath]:
            return relpath
    return None
