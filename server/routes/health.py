"""`GET /health`: status and counts for anyone; file names, errors and the rest for the admin."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import msgspec
from litestar import Request, get
from litestar.datastructures import State

from server import gitstate
from server.auth import is_admin
from server.compose import BUILTINS
from server.hub import Hub
from server.placeholders import unfilled_in
from server.routes.replies import service_of
from server.service import Service

# What a monitor needs, shown to anyone: no file name, caller name, error text or commit.
PUBLIC_HEALTH = (
    "status",
    "callers",
    "files_with_errors",
    "pending_writes",
    "pending_calls",
    "inbox_held",
    "inbox_parked",
)


@get("/health", sync_to_thread=False)
def health(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """Liveness and the figures a person checks first; the details only with the admin key."""
    hub: Hub = state.hub
    if hub.multi:
        report = tenants_report(hub, state.tenants_watcher.alive)
        public: tuple[str, ...] = PUBLIC_HEALTH + PUBLIC_TENANTS
    else:
        report, public = health_report(service_of(state)), tuple(PUBLIC_HEALTH)
    if is_admin(request.headers.get("authorization"), hub.settings):
        return report
    return {name: report[name] for name in public}


# With tenants (SPEC §12), also shown to anyone: how many, how many are refused, and requests nobody claimed.
PUBLIC_TENANTS = ("tenants", "tenants_with_problems", "unclaimed")
_SUMMED = ("callers", "files_with_errors", "pending_writes", "pending_calls", "inbox_held", "inbox_parked")


def tenants_report(hub: Hub, watcher_alive: bool) -> dict[str, Any]:
    """`/health` for a server of tenants: the sums, the problems, and each tenant's own report."""
    each = {name: health_report(service) for name, service in sorted(hub.services.items())}
    degraded = bool(hub.problems) or not watcher_alive or any(r["status"] != "ok" for r in each.values())
    return {
        "status": "degraded" if degraded else "ok",
        **{name: sum(r[name] for r in each.values()) for name in _SUMMED},
        "tenants": len(each),
        "tenants_with_problems": len(hub.problems),
        "unclaimed": hub.unclaimed.count,
        "tenant_problems": hub.problems,
        "watcher_alive": watcher_alive,
        "tenant_health": each,
    }


def health_report(service: Service) -> dict[str, Any]:
    """Everything `/health` knows, for the admin."""
    index, git, watcher = service.memory.index, service.memory.git.status, service.watcher
    errors = index.errors()
    watcher_alive = watcher.alive
    disk_error = service.memory.vault.disk_error
    degraded = bool(errors) or not watcher_alive or git.last_error is not None or not service.memory.git.alive
    degraded = degraded or disk_error is not None
    sync = service.sync
    degraded = degraded or sync.status.last_error is not None
    # A person's merge, rebase or cherry-pick in the vault: nothing is committed or written until it ends.
    operation = gitstate.state(service.memory.vault.root)
    degraded = degraded or operation is not None
    return {
        "status": "degraded" if degraded else "ok",
        "callers": index.caller_count,
        "files_with_errors": len(errors),
        "errors": errors,
        "watcher_alive": watcher_alive,
        "watcher_heartbeat_age_s": round(time.time() - watcher.heartbeat, 3) if watcher.heartbeat else None,
        "last_commit": git.last_commit,
        "last_commit_at": git.last_commit_at,
        "git_error": git.last_error,
        "disk_error": disk_error,
        "git_lock_recoveries": service.memory.git.runner.lock_recoveries,
        "pending_writes": git.pending,
        "pending_calls": service.memory.recorder.pending_calls,
        # Post-call events held in the inbox (SPEC §13), and those waiting for a broken caller file's fix.
        "inbox_held": service.postcalls.held,
        "inbox_parked": service.postcalls.parked,
        "inbox_error": service.postcalls.last_error,
        # The first held events (no number, no summary): which conversations wait, and which are parked.
        "inbox": [msgspec.to_builtins(item) for item in service.postcalls.entries()[:100]],
        # The scheduled backfill (BACKFILL_MINUTES): its last run's report, or why it failed; None when off.
        "backfill": _backfill(service),
        # Placeholders in soul.md that no variable fills: sent as plain text, never as placeholders.
        "unfilled_placeholders": [f"{u.where}: {{{{{u.name}}}}}" for u in unfilled_in(index.soul, BUILTINS)],
        # The worker process (git and call recording off the event loop); without it, both run in process.
        "worker_alive": service.worker is not None and service.worker.alive,
        "worker_restarts": service.worker.restarts if service.worker is not None else 0,
        "ready_seconds": round(service.ready_seconds, 3),
        # The remote as it may be shown (no credentials); None without GIT_REMOTE.
        "sync": dataclasses.asdict(sync.status) if sync.enabled else None,
        "restored_acknowledged": git.restored,
        # Files a merge settled by a rule (the remote's value kept, prose kept twice): for a person to check.
        "merge_conflicts": sync.status.merge_conflicts,
        "git_operation": None if operation is None else _operation(operation, service),
        # Calls placed by our own numbers (SPEC §12), and how many of our numbers were learned from calls.
        "outbound_calls": service.memory.identities.own.outbound_seen,
        "learned_own_numbers": len(service.memory.identities.own.learned),
    }


def _backfill(service: Service) -> dict[str, Any] | None:
    schedule = service.backfill
    if schedule is None:
        return None
    report = schedule.last_report
    return {"last_report": msgspec.to_builtins(report) if report else None, "last_error": schedule.last_error}


def _operation(operation: gitstate.InProgress, service: Service) -> dict[str, Any]:
    return {
        "operation": operation.operation.value,
        "since": operation.since,
        "seconds": round(max(0.0, time.time() - operation.since), 1),
        "waiting_writes": service.memory.git.operations.waiting,
        "detail": operation.describe(),
    }
