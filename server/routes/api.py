"""The admin REST API under `/api` (SPEC §5): add facts and notes, read, preview and forget callers."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Response, Router, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ServiceUnavailableException, ValidationException

from server.answers import answer_bytes, caller_json
from server.auth import admin_guard
from server.gitrun import GitError
from server.gitstate import OperationInProgress
from server.routes.replies import API_BODY_LIMIT, NOT_COMMITTED, NOT_SAVED, service_of
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


def _known(service: Service, caller: str) -> str:
    key = service.memory.identities.resolve(caller)
    if key is None:
        raise NotFoundException("unknown caller")
    return key


@post("/memory/{caller:str}", status_code=200, request_max_body_size=API_BODY_LIMIT)
async def api_add_fact(caller: str, data: FactBody, state: State) -> dict[str, Any]:
    """Add a fact to a caller (by phone hash, or by number, which may create the caller)."""
    service = service_of(state)
    target = service.memory.identities.write_target(caller)
    if target is None:
        raise NotFoundException("unknown caller")
    key = target.key
    with _write_errors():
        path = await service.memory.add_fact(key, data.fact, "api", e164=target.e164, legacy=target.legacy)
    return {"status": "saved", "phone_hash": key, "file": path}


@post("/notes", status_code=200, request_max_body_size=API_BODY_LIMIT)
async def api_add_note(data: NoteBody, state: State) -> dict[str, Any]:
    """Append to a daily note, or to a caller's notes when `phone_hash` is given."""
    service = service_of(state)
    key = _known(service, data.phone_hash) if data.phone_hash else None
    with _write_errors():
        path = await service.memory.add_note(data.note, "api", date=data.date, key=key)
    return {"status": "saved", "file": path}


@get("/callers/{caller:str}", sync_to_thread=False)
def api_get_caller(caller: str, state: State) -> dict[str, Any]:
    """A caller's memory: frontmatter, facts, calls and notes."""
    service = service_of(state)
    key = _known(service, caller)
    record = service.memory.index.caller(key)
    assert record is not None
    return caller_json(record, service.memory.index.caller_path(key))


@get("/callers/{caller:str}/preview", sync_to_thread=False)
def api_preview(caller: str, state: State) -> Response[bytes]:
    """Exactly what the personalize webhook would answer for this caller now."""
    service = service_of(state)
    key = _known(service, caller)
    return Response(
        answer_bytes(
            service.memory.index, service.settings, service.memory.index.caller(key), dt.datetime.now(dt.UTC), key
        ),
        media_type="application/json",
    )


@delete("/callers/{caller:str}", status_code=200)
async def api_forget(caller: str, state: State) -> dict[str, Any]:
    """Forget a caller: the file is removed in a commit (history keeps it; see the README)."""
    service = service_of(state)
    key = _known(service, caller)
    with _write_errors():
        await service.memory.forget(key, "api")
    return {"status": "forgotten", "phone_hash": key}


api = Router(
    "/api",
    route_handlers=[api_add_fact, api_add_note, api_get_caller, api_preview, api_forget],
    guards=[admin_guard],
)
