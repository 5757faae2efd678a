"""`POST /webhook/personalize`: ElevenLabs asks who is calling; the answer is always a valid 200.

The hot path. A bare ASGI route (it needs none of Litestar's per-request machinery: signature
model, `Request`, response object) that reads its headers and body by hand and hands them to one
plain function, `answer_call`. No body, however wrong, can fail the call: it answers 200 with a
valid body whatever happens inside, but for a wrong secret or an oversized body.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import msgspec
from litestar import asgi
from litestar.enums import ScopeType
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from server import requestlog
from server.answers import AnswerCache, default_bytes
from server.auth import has_webhook_secret
from server.elevenlabs import PersonalizeRequest, parse_personalize
from server.extrabody import UNKNOWN, extra_body, with_extra_body
from server.hub import Hub
from server.identity import Identity
from server.routes.replies import WEBHOOK_BODY_LIMIT, error_body
from server.service import Service

log = logging.getLogger("memory_bridge.http")

_HEADERS = (b"authorization", b"x-webhook-secret", b"content-length")


class Answered(msgspec.Struct):
    """The answer to one call, and who called (None when the body named nobody usable)."""

    content: bytes
    who: Identity | None = None
    call_sid: str | None = None
    called_number: str | None = None
    agent_id: str | None = None
    known: bool = False
    elapsed_ms: float = 0.0
    scope: str = ""  # the tenant's name and "/" (SPEC §12); empty for one vault


def answer_call(
    service: Service,
    answers: AnswerCache,
    body: bytes,
    now: dt.datetime,
    data: PersonalizeRequest | None = None,
    scope: str = "",
) -> Answered:
    """The personalize answer for a request body (or its already parsed `data`) at `now`; never raises."""
    started = time.perf_counter()
    try:
        data = data if data is not None else parse_personalize(body)
        who = service.memory.identities.identify(data.caller_id, data.called_number)
        soul = service.memory.index.soul_for(data.agent_id)
        caller = service.memory.identities.lookup(who)
        content = answers.get(service, caller, now, soul, scope, who.key)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if elapsed_ms > service.settings.personalize_deadline_ms:
            log.warning("personalize took %.1f ms, past the deadline: answering with defaults", elapsed_ms)
            content, caller = default_bytes(service, now), None
        if service.settings.custom_llm_extra_body:
            content = with_extra_body(content, extra_body(who.key, caller is not None, scope.rstrip("/") or None))
        return Answered(
            content, who, data.call_sid, data.called_number, data.agent_id, caller is not None, elapsed_ms, scope
        )
    except Exception:
        log.exception("personalize failed; answering with defaults")
        content = default_bytes(service, now)
        return Answered(with_extra_body(content, UNKNOWN) if service.settings.custom_llm_extra_body else content)


PATH = "/webhook/personalize"


async def serve_personalize(scope: Scope, receive: Receive, send: Send) -> None:
    """ElevenLabs' conversation-initiation webhook: who is calling and what the agent should know.

    Needs `scope["app"]`, the Litestar app whose state holds the service; `server.app.create_asgi`
    calls it straight for a POST, ahead of Litestar's router, and Litestar routes everything else here.
    """
    if scope["type"] != ScopeType.HTTP:
        # A websocket to this path: refused before it is accepted, as ASGI has it.
        await send({"type": "websocket.close", "code": 1003, "reason": "personalize is an HTTP webhook"})
        return
    if scope["method"] != "POST":
        await _send(send, 405, error_body(405, "Method Not Allowed"), ((b"allow", b"POST"),))
        return
    state = scope["app"].state
    hub: Hub = state.hub
    if hub.multi:
        await _tenant_call(hub, scope, receive, send)
        return
    service: Service = state.service
    authorization, x_webhook_secret, length = _headers(scope)
    secret = service.settings.webhook_secret  # unset: open, for a trial on loopback (config refuses otherwise)
    if secret is not None and not has_webhook_secret(authorization, x_webhook_secret, secret):
        await _send(send, 401, error_body(401, "missing or wrong webhook secret"))
        state.refusals.refused("/webhook/personalize", 401, "missing or wrong webhook secret")
        return
    body = await _read_body(receive, length, WEBHOOK_BODY_LIMIT)
    if body is None:
        await _send(send, 413, error_body(413, "Request Entity Too Large"), ((b"connection", b"close"),))
        state.refusals.refused("/webhook/personalize", 413, "body too large")
        return
    answered = answer_call(service, state.answers, body, dt.datetime.now(dt.UTC))
    await _send(send, 200, answered.content)
    _after(service, answered)


personalize = asgi(PATH, copy_scope=False)(serve_personalize)


def _after(service: Service, answered: Answered) -> None:
    """After the answer: the call is recorded, and what it says about our own numbers is learned."""
    # After the answer is sent: neither the log line nor the recording delays the call.
    key = answered.who.key if answered.who is not None else None
    tenant = answered.scope.rstrip("/") or requestlog.DEFAULT_TENANT
    requestlog.call_answered(answered.agent_id, key, answered.known, answered.elapsed_ms, tenant)
    if answered.who is None:
        return
    try:
        service.memory.recorder.note_call(answered.who, answered.call_sid)
        service.memory.identities.after_answer(answered.who, answered.called_number)
    except Exception:
        log.exception("could not note the call after answering it")


async def _tenant_call(hub: Hub, scope: Scope, receive: Receive, send: Send) -> None:
    """A call to a server of tenants (SPEC §12): the tenant found from the body, then its own secret checked."""
    authorization, x_webhook_secret, length = _headers(scope)
    body = await _read_body(receive, length, WEBHOOK_BODY_LIMIT)
    if body is None:
        await _send(send, 413, error_body(413, "Request Entity Too Large"), ((b"connection", b"close"),))
        return
    now = dt.datetime.now(dt.UTC)
    data = parse_personalize(body)
    found = hub.route(data.agent_id, data.called_number)
    secrets = hub.webhook_secrets(found.name if found else None)
    if secrets and not any(has_webhook_secret(authorization, x_webhook_secret, secret) for secret in secrets):
        await _send(send, 401, error_body(401, "missing or wrong webhook secret"))
        return
    if found is None:
        await _send(send, 200, hub.neutral_bytes(now))
        hub.unclaimed.note("personalize", data.agent_id)
        return
    service = found.service
    answered = answer_call(service, hub.answers, body, now, data, scope=found.name + "/")
    await _send(send, 200, answered.content)
    _after(service, answered)


def _headers(scope: Scope) -> list[str | None]:
    """The first value of each header the route reads, in one pass over the request's headers."""
    found: dict[bytes, str] = {}
    for key, value in scope["headers"]:
        if key in _HEADERS and key not in found:
            found[key] = value.decode("latin-1")
    return [found.get(name) for name in _HEADERS]


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
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": content, "more_body": False}
    await send(body)
