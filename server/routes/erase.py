"""`DELETE /api/callers/{caller}?purge=true` (and `&block=true`): a caller erased from all of history (SPEC §14)."""

from __future__ import annotations

from typing import Any

from litestar.exceptions import NotFoundException, ServiceUnavailableException

from server.gitrun import GitError
from server.gitstate import OperationInProgress
from server.routes.replies import NOT_COMMITTED
from server.service import Service
from server.vault import DiskError


async def erase_caller(service: Service, caller: str, *, block: bool) -> dict[str, Any]:
    """Erase a caller (by number, key or short key); `block`: and remember nothing of them again."""
    key = service.eraser.target(caller)
    if key is None or not (block or await service.eraser.known(key)):
        raise NotFoundException("unknown caller")
    try:
        erased = await service.eraser.erase(key, "api", block=block)
    except OperationInProgress as exc:
        raise ServiceUnavailableException(str(exc)) from None
    except (GitError, DiskError):
        raise ServiceUnavailableException(NOT_COMMITTED) from None
    return {
        "status": "blocked" if block else "erased",
        "commits_rewritten": erased.commits_rewritten,
        "audit_commit": erased.audit_commit,
    }
