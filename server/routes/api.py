"""The admin REST API under `/api` (SPEC §5): add facts and notes, read, preview and forget callers."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.exceptions import NotFoundException, ServiceUnavailableException, ValidationException
from litestar.params import FromPath, FromQuery, JSONBody

from server.answers import caller_json, preview_bytes
from server.auth import admin_guard
from server.gitrun import GitError
from server.gitstate import OperationInProgress
from server.hub import Hub
from server.routes.erase import erase_caller
from server.routes.replies import API_BODY_LIMIT, NOT_COMMITTED, NOT_SAVED
from server.service import Service
from server.vault import DiskError
from server.writes import WriteError


class FactBody(msgspec.Struct):
    """`POST /api/memory/{caller}`, as the predecessor accepted it."""

    fact: str


class NoteBody(msgspec.Struct):
    """`POST /api/notes`: a daily note, or a caller note when `phone_hash` is set."""

    note: str
    phone_hash: str | None = None
    date: str | None = None


@contextlib.contextmanager
def _write_errors() -> Iterator[None]:
    """A refused write answers 400; a disk or git failure 503, for nothing is acknowledged that is not committed.

    A write that waited in vain for a person's merge or rebase in the vault to end is 503 too, in words
    that say which, and its file was not touched.
    """
    try:
        yield
    except OperationInProgress as exc:
        raise ServiceUnavailableException(str(exc)) from None
    except WriteError as exc:
        raise ValidationException(str(exc)) from None
    except DiskError:
        raise ServiceUnavailableException(NOT_SAVED) from None
    except GitError:
        raise ServiceUnavailableException(NOT_COMMITTED) from None


def _service(request: Request[Any, Any, Any]) -> Service:
    """The vault a request is for: the one vault, or the tenant its path names (`/t/{tenant}/api/...`)."""
    hub: Hub = request.app.state.hub
    name = request.path_params.get("tenant")
    if not hub.multi:
        if name is not None:
            raise NotFoundException("unknown tenant: this server serves one vault, at /api/...")
        return hub.services[""]
    service = hub.named(name)
    if service is None and name is None:
        count = len(hub.services)
        raise ValidationException(f"this server serves {count} tenants: name one, as in /t/{{tenant}}/api/...")
    if service is None:
        raise NotFoundException("unknown tenant")
    return service


def _known(service: Service, caller: str) -> str:
    key = service.memory.identities.resolve(caller)
    if key is None:
        raise NotFoundException("unknown caller")
    return key


@post("/memory/{caller:str}", status_code=200, request_max_body_size=API_BODY_LIMIT)
async def api_add_fact(
    caller: FromPath[str], data: JSONBody[FactBody], request: Request[Any, Any, Any]
) -> dict[str, Any]:
    """Add a fact to a caller (by phone hash, or by number, which may create the caller)."""
    service = _service(request)
    target = service.memory.identities.write_target(caller)
    if target is None:
        raise NotFoundException("unknown caller")
    key = target.key
    with _write_errors():
        path = await service.memory.add_fact(key, data.fact, "api", e164=target.e164, legacy=target.legacy)
    return {"status": "saved", "phone_hash": key, "file": path}


@post("/notes", status_code=200, request_max_body_size=API_BODY_LIMIT)
async def api_add_note(data: JSONBody[NoteBody], request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Append to a daily note, or to a caller's notes when `phone_hash` is given."""
    service = _service(request)
    key = _known(service, data.phone_hash) if data.phone_hash else None
    with _write_errors():
        path = await service.memory.add_note(data.note, "api", date=data.date, key=key)
    return {"status": "saved", "file": path}


@get("/callers/{caller:str}", sync_to_thread=False)
def api_get_caller(caller: FromPath[str], request: Request[Any, Any, Any]) -> dict[str, Any]:
    """A caller's memory: frontmatter, facts, calls and notes."""
    service = _service(request)
    key = _known(service, caller)
    record = service.memory.index.caller(key)
    assert record is not None
    return caller_json(record, service.memory.index.caller_path(key))


@get("/callers/{caller:str}/preview", sync_to_thread=False)
def api_preview(caller: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    """Exactly what the personalize webhook would answer for this caller now."""
    service = _service(request)
    key = _known(service, caller)
    index = service.memory.index
    return Response(
        preview_bytes(index, service.settings, index.caller(key), key, dt.datetime.now(dt.UTC)),
        media_type="application/json",
    )


@delete("/callers/{caller:str}", status_code=200)
async def api_forget(
    caller: FromPath[str],
    request: Request[Any, Any, Any],
    purge: FromQuery[bool] = False,
    block: FromQuery[bool] = False,
) -> dict[str, Any]:
    """Forget a caller: the file is removed in a commit; `purge`: erased from all of history (SPEC §14)."""
    service = _service(request)
    if purge or block:
        return await erase_caller(service, caller, block=block)
    key = _known(service, caller)
    with _write_errors():
        await service.memory.forget(key, "api")
    return {"status": "forgotten", "phone_hash": key}


_HANDLERS = [api_add_fact, api_add_note, api_get_caller, api_preview, api_forget]
api = Router("/api", route_handlers=_HANDLERS, guards=[admin_guard])
# The same API for one tenant of TENANTS_DIR (SPEC §12); with one tenant, /api/... serves it too.
tenant_api = Router("/t/{tenant:str}/api", route_handlers=_HANDLERS, guards=[admin_guard])
