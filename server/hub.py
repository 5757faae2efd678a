"""The vaults one process serves, and which one a request is for: one vault, or one per tenant (SPEC §12).

With `VAULT_DIR` alone every request is the one vault's, as it always was. With `TENANTS_DIR` a
request goes to the tenant that claims its agent id, else its called number (`server.routing`); a
request nobody claims gets the neutral new-caller answer of a default soul, is counted, and is
logged at most once every few seconds. `server.tenants` keeps the tenants loaded.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import msgspec

from server.answers import STATIC_DEFAULT, AnswerCache
from server.compose import defaults
from server.config import Settings
from server.parse import parse_soul
from server.routing import Directory
from server.service import Service
from server.vault import STARTER_SOUL

log = logging.getLogger("memory_bridge.tenants")

_UNCLAIMED_LOG_SECONDS = 10.0
_encoder = msgspec.json.Encoder()


class TenantSecrets(msgspec.Struct, frozen=True):
    """A tenant's own webhook secrets, for an agency with several ElevenLabs workspaces (None: the service's)."""

    webhook: str | None = None
    elevenlabs: str | None = None


@dataclass(frozen=True, slots=True)
class Routed:
    """The tenant a request is for: its name ("" for the one vault) and its service."""

    name: str
    service: Service


@dataclass
class Unclaimed:
    """Requests no tenant claimed: counted for /health, logged at most once every few seconds."""

    count: int = 0
    _logged_at: float = 0.0
    _since_log: int = 0

    def note(self, what: str, agent_id: object) -> None:
        """Count one unclaimed request; log it unless a line was logged a moment ago."""
        self.count += 1
        self._since_log += 1
        now = time.monotonic()
        if now - self._logged_at >= _UNCLAIMED_LOG_SECONDS:
            # The agent id, never the numbers: an agent id is the configuration's, a number a person's.
            agent = agent_id[:64] if isinstance(agent_id, str) and agent_id.isprintable() else "none"
            log.warning(
                "%d request(s) no tenant claims (latest: %s, agent id %s): answered neutrally, nothing recorded; "
                "add the agent id to a tenant.md",
                self._since_log,
                what,
                agent,
            )
            self._logged_at, self._since_log = now, 0


@dataclass
class Hub:
    """Every service this process runs, by tenant name ("" for the one vault), and the routing between them."""

    settings: Settings
    services: dict[str, Service] = field(default_factory=dict)
    directory: Directory = field(default_factory=lambda: Directory({}))
    secrets: dict[str, TenantSecrets] = field(default_factory=dict)
    # Per tenant folder, what is wrong with it (a broken tenant.md, a claim another tenant makes too).
    problems: dict[str, list[str]] = field(default_factory=dict)
    unclaimed: Unclaimed = field(default_factory=Unclaimed)
    answers: AnswerCache = field(default_factory=AnswerCache)
    _neutral: tuple[str, bytes] = ("", b"")

    @property
    def multi(self) -> bool:
        """Whether this process serves tenants (TENANTS_DIR) rather than one vault."""
        return self.settings.tenants_dir is not None

    def route(self, agent_id: object, called_number: object) -> Routed | None:
        """The tenant a request is for; None when no tenant claims it."""
        if not self.multi:
            return Routed("", self.services[""])
        name = self.directory.route(agent_id, called_number).tenant
        service = self.services.get(name) if name is not None else None
        return Routed(name, service) if name is not None and service is not None else None

    def named(self, name: str | None) -> Service | None:
        """A tenant's service by name; without a name, the only one (None if there are several or none)."""
        if name is None:
            return next(iter(self.services.values())) if len(self.services) == 1 else None
        return self.services.get(name) if self.multi else None

    def neutral_bytes(self, now: dt.datetime) -> bytes:
        """The answer to a request no tenant claims: a new caller's, from the starter soul, no notes. Never raises."""
        today = now.astimezone(self.settings.tz).date().isoformat()
        if self._neutral[0] != today:
            try:
                soul = parse_soul(STARTER_SOUL.read_text(encoding="utf-8"))
                self._neutral = (today, _encoder.encode(defaults(soul, {}, self.settings, now)))
            except Exception:
                log.exception("could not compose the neutral answer; sending the built-in one")
                return STATIC_DEFAULT
        return self._neutral[1]

    def webhook_secrets(self, name: str | None) -> list[str]:
        """The webhook secrets a request for tenant `name` may carry (none configured: the webhook is open)."""
        own = self.secrets.get(name or "")
        found = [self.settings.webhook_secret, own.webhook if own else None]
        if name is None:  # unclaimed: any of them, for the neutral answer discloses nothing
            found += [secrets.webhook for secrets in self.secrets.values()]
        return [secret for secret in found if secret]

    def elevenlabs_secrets(self) -> dict[str, str | None]:
        """Every post-call signing secret, by tenant ("" : the service's own, good for every tenant)."""
        found: dict[str, str | None] = {"": self.settings.elevenlabs_webhook_secret}
        found.update({name: secrets.elevenlabs for name, secrets in self.secrets.items() if secrets.elevenlabs})
        return found
