"""The log lines of SPEC §13: one per call answered, one per refused request (rate-limited), never a number.

A call's line names the tenant, the agent, the caller key's prefix (or `withheld`), whether the
caller is known, and the time taken. A refused request's line names the route, the status and why;
a flood of them (a scanner, a misconfigured secret) is held to a few lines a minute, and the next
line that is written says how many were left out.
"""

from __future__ import annotations

import logging
import re
import time

from server import phone

log = logging.getLogger("memory_bridge.requests")

DEFAULT_TENANT = "default"  # one vault, VAULT_DIR (SPEC §12)
REFUSALS_PER_WINDOW = 10
WINDOW_SECONDS = 60.0
# An agent id as ElevenLabs makes them; anything else is shown as `?`, never echoed.
_AGENT_ID = re.compile(r"[A-Za-z0-9_\-]{1,80}")


def shown_agent(agent_id: object) -> str:
    """An agent id as it may be logged."""
    return agent_id if isinstance(agent_id, str) and _AGENT_ID.fullmatch(agent_id) else "?"


def call_answered(
    agent_id: object, key: str | None, known: bool, elapsed_ms: float, tenant: str = DEFAULT_TENANT
) -> None:
    """The line for one answered call."""
    if not log.isEnabledFor(logging.INFO):
        return  # on every call: nothing is built for a line that is not written
    caller = phone.short(key) if key else "withheld"
    log.info(
        "call answered: tenant=%s agent=%s caller=%s %s in %.2f ms",
        tenant,
        shown_agent(agent_id),
        caller,
        "known" if known else "new",
        elapsed_ms,
    )


class Refusals:
    """Refused requests, logged at most `limit` times per window; what was left out is counted."""

    def __init__(self, limit: int = REFUSALS_PER_WINDOW, window: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._started = float("-inf")
        self._logged = 0
        self._left_out = 0
        self.total = 0

    def refused(self, path: str, status: int, reason: str, now: float | None = None) -> bool:
        """Note one refused request; returns whether a line was written for it."""
        self.total += 1
        current = time.monotonic() if now is None else now
        if current - self._started >= self.window:
            self._started, self._logged = current, 0
        if self._logged >= self.limit:
            self._left_out += 1
            return False
        self._logged += 1
        extra = f" ({self._left_out} more refused since, not logged)" if self._left_out else ""
        self._left_out = 0
        log.warning("refused %s: %d %s%s", path, status, reason, extra)
        return True
