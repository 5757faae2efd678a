"""The Litestar app: HTTP routes of SPEC §5, parsing at the boundary and answering in JSON.

Handlers are thin: check auth, decode the body into a Struct, call `Memory` (writes) or `compose`
(the personalize answer), encode. The personalize webhook never fails a call: whatever happens
inside, it answers 200 with a valid body.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, asgi, delete, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
    ValidationException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.types import Receive, Scope, Send

from server import phone
from server.compose import BUILTINS, compose, defaults
from server.config import Settings
from server.elevenlabs import (
    Personalization,
    PersonalizeRequest,
    PostCallEvent,
    ToolAnswer,
    ToolRemember,
    verify_signature,
)
from server.gitwriter import GitError
from server.memory import Identity, WriteError
from server.records import Caller
from server.service import Service, open_service

log = logging.getLogger("memory_bridge.http")

WEBHOOK_BODY_LIMIT = 64 * 1024
POST_CALL_BODY_LIMIT = 8 * 1024 * 1024  # transcripts of long calls are big; audio events bigger still
API_BODY_LIMIT = 64 * 1024
_CONVERSATION_ID = re.compile(r"[A-Za-z0-9_\-]{1,200}")

_personalize_decoder = msgspec.json.Decoder(PersonalizeRequest)
_encoder = msgspec.json.Encoder()
# The last resort if even composing the defaults fails: every built-in variable, nothing else.
_STATIC_DEFAULT = _encoder.encode(
    Personalization(dynamic_variables={**dict.fromkeys(BUILTINS, ""), "caller_known": False, "call_count": 0})
)


class FactBody(msgspec.Struct):
    """`POST /api/memory/{caller}`, as the predecessor accepted it."""

    fact: str


class NoteBody(msgspec.Struct):
    """`POST /api/notes`: a daily note, or a caller note when `phone_hash` is set."""

    note: str
    phone_hash: str | None = None
    date: str | None = None


# -- helpers ---------------------------------------------------------------------------------------


def _service(state: State) -> Service:
    return state.service  # type: ignore[no-any-return]


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def has_webhook_secret(authorization: str | None, x_webhook_secret: str | None, secret: str) -> bool:
    """Whether a request's headers carry `secret` as a Bearer token or as `X-Webhook-Secret`."""
    return _same(_bearer(authorization), secret) or _same(x_webhook_secret, secret)


def require_webhook_secret(request: ASGIConnection[Any, Any, Any, Any], settings: Settings) -> None:
    """`WEBHOOK_SECRET` as a Bearer token or `X-Webhook-Secret`; 403 when it is not configured."""
    secret = settings.webhook_secret
    if secret is None:
        raise PermissionDeniedException("this endpoint is disabled: set WEBHOOK_SECRET to enable it")
    if not has_webhook_secret(request.headers.get("authorization"), request.headers.get("x-webhook-secret"), secret):
        raise NotAuthorizedException("missing or wrong webhook secret")


def require_admin(request: ASGIConnection[Any, Any, Any, Any], settings: Settings) -> None:
    """`ADMIN_API_KEY` as a Bearer token; 403 when it is not configured."""
    if settings.admin_api_key is None:
        raise PermissionDeniedException("the API is disabled: set ADMIN_API_KEY to enable it")
    if not _same(_bearer(request.headers.get("authorization")), settings.admin_api_key):
        raise NotAuthorizedException("missing or wrong API key")


# Guards are async: Litestar runs a sync guard in a worker thread, a thread hop on every request.
async def webhook_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for the agent's tools: `WEBHOOK_SECRET` required."""
    require_webhook_secret(connection, connection.app.state.service.settings)


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for the REST API."""
    require_admin(connection, connection.app.state.service.settings)


def _decode(body: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ValidationException(f"invalid request body: {exc}") from None
    except msgspec.DecodeError:
        raise ValidationException("the request body is not valid JSON") from None


def parse_personalize(body: bytes) -> PersonalizeRequest:
    """Decode the personalize body, salvaging string fields from any JSON object; never raises."""
    try:
        return _personalize_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return PersonalizeRequest()
    if not isinstance(raw, dict):
        return PersonalizeRequest()
    fields = PersonalizeRequest.__struct_fields__
    return PersonalizeRequest(**{k: v for k, v in raw.items() if k in fields and isinstance(v, str)})


def answer_bytes(service: Service, caller: Caller | None, now: dt.datetime) -> bytes:
    """Exactly what the personalize webhook answers for `caller` at `now`."""
    index = service.memory.index
    return _encoder.encode(compose(caller, index.soul, index.notes, now, service.settings))


class AnswerCache:
    """Encoded personalize answers by caller, reused while all of compose()'s inputs are unchanged.

    compose() is pure, and its inputs are immutable records that the index replaces on every edit,
    so an answer stays valid while the caller record, the soul and today's note are the same objects
    and the day is the same. Bounded, least recently used first: an answer (a few kB) is reused only
    until the caller's call is recorded, seconds later, so only recent callers' answers are worth it.
    """

    def __init__(self, size: int = 4_096) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[object, object, object, str, bytes]] = OrderedDict()
        never = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._minute: tuple[dt.datetime, dt.datetime, str] = (never, never, "")

    def _today(self, service: Service, now: dt.datetime) -> str:
        # Converting to the business time zone costs more than the rest of a cache hit; a date can
        # only change on a minute boundary (every zone's offset is whole minutes), so once a minute.
        start, end, today = self._minute
        if not start <= now < end:
            start = now.replace(second=0, microsecond=0)
            today = service.memory.today(now)
            self._minute = (start, start + dt.timedelta(minutes=1), today)
        return today

    def get(self, service: Service, caller: Caller | None, now: dt.datetime) -> bytes:
        """The answer for `caller` at `now`, composed only if an input changed since the last time."""
        index = service.memory.index
        soul, today = index.soul, self._today(service, now)
        note = index.notes.get(today)
        key = caller.phone_hash if caller is not None else ""
        entry = self._entries.get(key)
        if entry is not None and entry[0] is caller and entry[1] is soul and entry[2] is note and entry[3] == today:
            self._entries.move_to_end(key)
            return entry[4]
        content = answer_bytes(service, caller, now)
        self._entries[key] = (caller, soul, note, today, content)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return content


def _defaults(service: Service, now: dt.datetime) -> bytes:
    try:
        index = service.memory.index
        return _encoder.encode(defaults(index.soul, index.notes, service.settings, now))
    except Exception:
        log.exception("could not compose the default answer; sending the built-in one")
        return _STATIC_DEFAULT


# A write that reached the vault but not git is not acknowledged: the client should retry.
NOT_COMMITTED = "saved in the vault, but git failed to commit it (see /health); retry later"


def _error(status: int, detail: str) -> bytes:
    """The body of every error answer: `{"status_code": ..., "detail": ...}`."""
    return _encoder.encode({"status_code": status, "detail": detail})


def _json(content: Any, status: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(content), status_code=status, media_type="application/json")


# -- ElevenLabs ------------------------------------------------------------------------------------


_PERSONALIZE_HEADERS = (b"authorization", b"x-webhook-secret", b"content-length")


def _headers(scope: Scope, names: tuple[bytes, ...]) -> list[str | None]:
    """The first value of each of `names` (lower-case) in the request's headers, in one pass."""
    found: dict[bytes, str] = {}
    for key, value in scope["headers"]:
        if key in names and key not in found:
            found[key] = value.decode("latin-1")
    return [found.get(name) for name in names]


async def _read_body(receive: Receive, length: str | None, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it is known to exceed `limit` bytes."""
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # the client went away; nothing will read the answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send(send: Send, status: int, content: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


@asgi("/webhook/personalize", copy_scope=False)
async def personalize(scope: Scope, receive: Receive, send: Send) -> None:
    """ElevenLabs' conversation-initiation webhook: who is calling and what the agent should know.

    A bare ASGI route: it is the hot path, and it needs none of Litestar's per-request machinery
    (signature model, `Request`, response object). The body (`caller_id`, `agent_id`,
    `called_number`, `call_sid`, `conversation_id`, unknown keys ignored) is read by hand, so that no
    body, however wrong, can fail the call: always 200, but for a wrong secret or an oversized body.
    """
    if scope["method"] != "POST":
        await _send(send, 405, _error(405, "Method Not Allowed"), ((b"allow", b"POST"),))
        return
    state = scope["app"].state
    service: Service = state.service
    authorization, x_webhook_secret, length = _headers(scope, _PERSONALIZE_HEADERS)
    secret = service.settings.webhook_secret  # unset: open, for a trial on loopback (config refuses otherwise)
    if secret is not None and not has_webhook_secret(authorization, x_webhook_secret, secret):
        await _send(send, 401, _error(401, "missing or wrong webhook secret"))
        return
    body = await _read_body(receive, length, WEBHOOK_BODY_LIMIT)
    if body is None:
        await _send(send, 413, _error(413, "Request Entity Too Large"), ((b"connection", b"close"),))
        return
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    who: Identity | None = None
    call_sid: str | None = None
    try:
        data = parse_personalize(body)
        call_sid = data.call_sid
        who = service.memory.identify(data.caller_id, data.called_number)
        content = state.answers.get(service, service.memory.lookup(who), now)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if elapsed_ms > service.settings.personalize_deadline_ms:
            log.warning("personalize took %.1f ms, past the deadline: answering with defaults", elapsed_ms)
            content = _defaults(service, now)
    except Exception:
        log.exception("personalize failed; answering with defaults")
        content = _defaults(service, now)
    await _send(send, 200, content)
    if who is not None:
        service.memory.note_call(who, call_sid)  # recorded in the background, after the answer


@post("/webhook/post-call", status_code=200, request_max_body_size=POST_CALL_BODY_LIMIT)
async def post_call(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """ElevenLabs' post-call webhook: verify the signature, then write the call back."""
    service = _service(state)
    secret = service.settings.elevenlabs_webhook_secret
    if secret is None:
        raise PermissionDeniedException("post-call webhooks are disabled: set ELEVENLABS_WEBHOOK_SECRET")
    body = await request.body()
    if not verify_signature(request.headers.get("elevenlabs-signature"), body, secret):
        raise NotAuthorizedException("missing, stale or wrong ElevenLabs-Signature")
    event: PostCallEvent = _decode(body, PostCallEvent)
    if event.type != "post_call_transcription" or event.data is None:
        return _json({"status": "ignored", "type": event.type})
    data = event.data
    if not data.conversation_id:
        raise ValidationException("the event has no conversation_id")
    if not _CONVERSATION_ID.fullmatch(data.conversation_id):
        # It is written into the caller's file and the commit message: one plain token only.
        raise ValidationException("the event's conversation_id is not a conversation id")
    call = data.metadata.phone_call if data.metadata else None
    variables = (
        data.conversation_initiation_client_data.dynamic_variables if data.conversation_initiation_client_data else {}
    )
    memory = service.memory
    who = memory.identify(call.external_number if call else None)
    if who.key is None:
        who = memory.identify(variables.get("system__caller_id"), variables.get("system__called_number"))
    call_sid = (call.call_sid if call else None) or variables.get("system__call_sid")
    key = who.key or memory.key_for_call_sid(call_sid if isinstance(call_sid, str) else None)
    if key is None:
        return _json({"status": "ignored", "reason": "no usable caller number"})
    started = data.metadata.start_time_unix_secs if data.metadata else None
    try:
        when = dt.datetime.fromtimestamp(started, dt.UTC) if started else dt.datetime.now(dt.UTC)
    except (ValueError, OverflowError, OSError):  # a start time no calendar holds
        when = dt.datetime.now(dt.UTC)
    analysis = data.analysis
    fills = {
        name: str(result.value)
        for name, result in (analysis.data_collection_results.items() if analysis else ())
        if isinstance(result.value, str | int | float) and not isinstance(result.value, bool)
    }
    try:
        changed = await memory.write_back(
            key,
            data.conversation_id,
            (analysis.transcript_summary if analysis else None) or "",
            when,
            fills,
            e164=who.caller_id.e164,
            legacy=who.legacy,
        )
    except GitError:
        # On disk but not committed: 503 makes ElevenLabs deliver again, which is idempotent.
        raise ServiceUnavailableException(NOT_COMMITTED) from None
    except WriteError as exc:
        # The caller's file is broken by hand; ElevenLabs retries later, perhaps after it is fixed.
        raise ServiceUnavailableException(f"cannot record the call yet: {exc}") from None
    return _json({"status": "saved" if changed else "duplicate", "caller": phone.short(key)})


@post("/tools/remember", status_code=200, request_max_body_size=WEBHOOK_BODY_LIMIT, guards=[webhook_guard])
async def tool_remember(data: ToolRemember, state: State) -> ToolAnswer:
    """The agent's `remember` tool: save one fact about the caller, mid-call."""
    service = _service(state)
    who = service.memory.identify(data.caller_id, data.called_number)
    if who.key is None:
        return ToolAnswer("not_saved", "I can't save that on this call, because your number is withheld.")
    fact = (data.fact or "").strip()
    if not fact:
        return ToolAnswer("not_saved", "I didn't catch what to remember. Could you say it again?")
    try:
        await service.memory.add_fact(who.key, fact, "tool", e164=who.caller_id.e164, legacy=who.legacy)
    except WriteError as exc:
        return ToolAnswer("not_saved", f"I couldn't save that: {exc}.")
    except GitError:
        # Nothing is acknowledged that is not committed: the agent must not tell the caller it is saved.
        return ToolAnswer("not_saved", "Sorry, I couldn't save that just now. Please mention it again next time.")
    return ToolAnswer("saved", "Got it, I've made a note of that.")


# -- health ----------------------------------------------------------------------------------------


@get("/health", sync_to_thread=False)
def health(state: State) -> dict[str, Any]:
    """Liveness and the figures a person checks first."""
    service = _service(state)
    index, git, watcher = service.memory.index, service.memory.git.status, service.watcher
    errors = index.errors()
    watcher_alive = watcher.alive
    degraded = bool(errors) or not watcher_alive or git.last_error is not None or not service.memory.git.alive
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
        "git_lock_recoveries": git.lock_recoveries,
        "pending_writes": git.pending,
        "pending_calls": service.memory.pending_calls,
        # The worker process (git and call recording off the event loop); without it, both run in process.
        "worker_alive": service.worker is not None and service.worker.alive,
        "worker_restarts": service.worker.restarts if service.worker is not None else 0,
        "ready_seconds": round(service.ready_seconds, 3),
    }


# -- REST API --------------------------------------------------------------------------------------


def _known(service: Service, caller: str) -> str:
    key = service.memory.resolve(caller)
    if key is None:
        raise NotFoundException("unknown caller")
    return key


@post("/memory/{caller:str}", status_code=200, request_max_body_size=API_BODY_LIMIT)
async def api_add_fact(caller: str, data: FactBody, state: State) -> dict[str, Any]:
    """Add a fact to a caller (by phone hash, or by number, which may create the caller)."""
    service = _service(state)
    target = service.memory.write_target(caller)
    if target is None:
        raise NotFoundException("unknown caller")
    key, e164, legacy = target
    try:
        path = await service.memory.add_fact(key, data.fact, "api", e164=e164, legacy=legacy)
    except WriteError as exc:
        raise ValidationException(str(exc)) from None
    except GitError:
        raise ServiceUnavailableException(NOT_COMMITTED) from None
    return {"status": "saved", "phone_hash": key, "file": path}


@post("/notes", status_code=200, request_max_body_size=API_BODY_LIMIT)
async def api_add_note(data: NoteBody, state: State) -> dict[str, Any]:
    """Append to a daily note, or to a caller's notes when `phone_hash` is given."""
    service = _service(state)
    key = _known(service, data.phone_hash) if data.phone_hash else None
    try:
        path = await service.memory.add_note(data.note, "api", date=data.date, key=key)
    except WriteError as exc:
        raise ValidationException(str(exc)) from None
    except GitError:
        raise ServiceUnavailableException(NOT_COMMITTED) from None
    return {"status": "saved", "file": path}


@get("/callers/{caller:str}", sync_to_thread=False)
def api_get_caller(caller: str, state: State) -> dict[str, Any]:
    """A caller's memory: frontmatter, facts, calls and notes."""
    service = _service(state)
    key = _known(service, caller)
    record = service.memory.index.caller(key)
    assert record is not None
    return caller_json(record, service.memory.index.caller_path(key))


@get("/callers/{caller:str}/preview", sync_to_thread=False)
def api_preview(caller: str, state: State) -> Response[bytes]:
    """Exactly what the personalize webhook would answer for this caller now."""
    service = _service(state)
    key = _known(service, caller)
    return Response(
        answer_bytes(service, service.memory.index.caller(key), dt.datetime.now(dt.UTC)),
        media_type="application/json",
    )


@delete("/callers/{caller:str}", status_code=200)
async def api_forget(caller: str, state: State) -> dict[str, Any]:
    """Forget a caller: the file is removed in a commit (history keeps it; see the README)."""
    service = _service(state)
    key = _known(service, caller)
    try:
        await service.memory.forget(key, "api")
    except GitError:
        raise ServiceUnavailableException(NOT_COMMITTED) from None
    return {"status": "forgotten", "phone_hash": key}


def caller_json(record: Caller, path: str | None) -> dict[str, Any]:
    """The API's view of a caller."""
    frontmatter: dict[str, Any] = {
        "phone_hash": record.phone_hash,
        "name": record.name,
        "aliases": list(record.aliases),
        "call_count": record.call_count,
        "first_call": record.first_call,
        "last_call": record.last_call,
    }
    for key in ("language", "voice_id", "first_message"):
        if getattr(record, key):
            frontmatter[key] = getattr(record, key)
    frontmatter.update(record.extra)
    return {
        "phone_hash": record.phone_hash,
        "file": path,
        "frontmatter": frontmatter,
        "facts": list(record.facts),
        "calls": [msgspec.to_builtins(call) for call in record.calls],
        "notes": list(record.notes),
    }


# -- the app ---------------------------------------------------------------------------------------


def _error_response(status: int, detail: str) -> Response[bytes]:
    return Response(_error(status, detail), status_code=status, media_type="application/json")


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, HTTPException):
        return _error_response(exc.status_code, exc.detail)
    log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
    return _error_response(500, "internal error; see the server log")


def _too_deep(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # msgspec refuses JSON nested past its recursion limit, in our decoding and in Litestar's alike;
    # that is bad input, not our failure.
    return _error_response(400, "the request body is nested too deeply")


def create_app(settings: Settings) -> Litestar:
    """The Litestar app for one vault. The vault is opened and indexed before the first request."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        service = open_service(settings)
        await service.start()
        app.state.service = service
        app.state.answers = AnswerCache()
        log.info("memory-bridge ready in %.2f s on %s:%d", service.ready_seconds, settings.host, settings.port)
        try:
            yield
        finally:
            await service.stop()

    return Litestar(
        route_handlers=[
            personalize,
            post_call,
            tool_remember,
            health,
            Router(
                "/api",
                route_handlers=[api_add_fact, api_add_note, api_get_caller, api_preview, api_forget],
                guards=[admin_guard],
            ),
        ],
        lifespan=[lifespan],
        exception_handlers={500: _internal_error, RecursionError: _too_deep},
        openapi_config=OpenAPIConfig(title="memory-bridge", version="0.1.0"),
        request_max_body_size=API_BODY_LIMIT,
        logging_config=None,
    )
