"""`POST /webhook/post-call`: a finished call, held durably in the inbox before the 200 (SPEC §6, §12, §13).

The body is streamed: the signature is computed as it arrives, and a body that is not a
transcription (an audio event of any size) is only hashed, never kept. A transcription is decoded,
its tenant and caller found, and the call held in the inbox (`server.postcalls`), which writes it
back in the background; the answer does not wait for git.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
    ValidationException,
)

from server import phone
from server.changes import recorded_conversations
from server.elevenlabs import FinishedCall, PayloadError, PostCallEvent, finished_call, parse_signature, sniff_type
from server.hub import Hub
from server.inbox import HeldCall
from server.postcalls import held_call
from server.routes.replies import POST_CALL_BODY_LIMIT, decode, json_response, service_of
from server.service import Service

log = logging.getLogger("memory_bridge.postcall")

# Sent with a refusal that leaves the body unread, so that the server does not read it to keep the
# connection alive.
_CLOSE = {"connection": "close"}
TRANSCRIPTION = "post_call_transcription"
# The first bytes of a body are kept until its type is known; an event of another type is only hashed.
_SNIFF_BYTES = 64 * 1024


class _TooLarge(HTTPException):
    status_code = 413


@post("/webhook/post-call", status_code=200, request_max_body_size=None)
async def post_call(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """ElevenLabs' post-call webhook: verify the signature while reading, hold the call, answer 200."""
    hub: Hub = state.hub
    # With tenants, the service's secret is good for every tenant, a tenant's own for that tenant only.
    candidates = hub.elevenlabs_secrets() if hub.multi else {"": service_of(state).settings.elevenlabs_webhook_secret}
    secrets = {name: secret for name, secret in candidates.items() if secret}
    if not secrets:
        raise PermissionDeniedException("post-call webhooks are disabled: set ELEVENLABS_WEBHOOK_SECRET")
    # Refused before the body is read: an unsigned request must not cost a byte of memory.
    signature = parse_signature(request.headers.get("elevenlabs-signature"))
    if signature is None:
        raise NotAuthorizedException("missing, malformed or stale ElevenLabs-Signature", headers=_CLOSE)
    running = {name: signature.start(secret) for name, secret in secrets.items()}
    body = bytearray()
    kept, size, kind = True, 0, None
    async for chunk in request.stream():
        for mac in running.values():
            mac.update(chunk)
        size += len(chunk)
        if not kept:
            continue
        body += chunk
        if kind is None and len(body) >= _SNIFF_BYTES:
            kind = sniff_type(bytes(body[:_SNIFF_BYTES])) or ""
            kept = kind in {TRANSCRIPTION, ""}  # unknown yet: kept up to the limit
        if len(body) > POST_CALL_BODY_LIMIT:
            kept = False
        if not kept:
            body = bytearray()  # an audio event's bytes go no further than the running HMAC
    signed_by = {name for name, mac in running.items() if signature.finish(mac)}
    if not signed_by:
        raise NotAuthorizedException("missing, stale or wrong ElevenLabs-Signature")
    if not kept:
        if kind in {TRANSCRIPTION, ""}:
            log.error("a signed transcription event of %d bytes is over the %d-byte limit", size, POST_CALL_BODY_LIMIT)
            raise _TooLarge(f"a transcription event is limited to {POST_CALL_BODY_LIMIT} bytes")
        return json_response({"status": "ignored", "type": kind})
    event: PostCallEvent = decode(bytes(body), PostCallEvent)
    if event.type != TRANSCRIPTION or event.data is None:
        return json_response({"status": "ignored", "type": event.type})
    try:
        call = finished_call(event.data)
    except PayloadError as exc:
        raise ValidationException(str(exc)) from None
    if not hub.multi:
        return await _hold(service_of(state), call)
    found = hub.route(call.agent_id, call.agent_number or call.initiation_called_number)
    if found is None:
        hub.unclaimed.note("post-call", call.agent_id)
        return json_response({"status": "ignored", "reason": "no tenant claims this call's agent or number"})
    if "" not in signed_by and found.name not in signed_by:
        # Signed by another tenant's workspace: it may not write to this tenant's memory.
        raise NotAuthorizedException("missing, stale or wrong ElevenLabs-Signature")
    return await _hold(found.service, call)


async def _hold(service: Service, call: FinishedCall) -> Response[bytes]:
    """Hold a finished call for its caller's memory, and learn our own numbers from it."""
    identities = service.memory.identities
    # Whichever way the call went, the agent's number is ours; the other party of a call we placed is not.
    identities.learn_own(call.agent_number)
    if call.outbound:
        identities.unlearn_own(call.external_number)
    held = held_call(service.memory, call, time.time())
    if held is None:
        return json_response({"status": "ignored", "reason": "no usable caller number"})
    short = phone.short(held.key)
    if _already(service, held):
        return json_response({"status": "duplicate", "caller": short})
    if service.memory.forgets.before_forget((held.key, held.legacy), held.started):
        # A conversation from before the caller was forgotten: nothing is held, nothing is written.
        return json_response({"status": "forgotten", "caller": short})
    try:
        await service.postcalls.hold(held)
    except OSError as exc:
        log.error("cannot hold a post-call event for %s: %s", short, exc)
        raise ServiceUnavailableException("not held: the vault's disk refused the event; retry later") from None
    return json_response({"status": "held", "caller": short})


def _already(service: Service, held: HeldCall) -> bool:
    """A retried delivery: the conversation is recorded in the caller's file, or held and not yet applied."""
    if service.postcalls.is_held(held.conversation_id):
        return True
    index = service.memory.index
    caller = index.caller(held.key) or (index.caller(held.legacy) if held.legacy else None)
    return caller is not None and held.conversation_id in recorded_conversations(caller)
