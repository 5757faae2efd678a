"""`POST /webhook/post-call`: ElevenLabs reports a finished call; its summary is written back (SPEC §6)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
    ValidationException,
)

from server import phone
from server.elevenlabs import FinishedCall, PayloadError, PostCallEvent, finished_call, parse_signature
from server.gitrun import GitError
from server.gitstate import OperationInProgress
from server.hub import Hub
from server.routes.replies import NOT_COMMITTED, NOT_SAVED, POST_CALL_BODY_LIMIT, decode, json_response, service_of
from server.service import Service
from server.vault import DiskError
from server.writes import WriteError

# Sent with a refusal that leaves the body unread, so that the server does not read it to keep the
# connection alive.
_CLOSE = {"connection": "close"}


@post("/webhook/post-call", status_code=200, request_max_body_size=POST_CALL_BODY_LIMIT)
async def post_call(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """ElevenLabs' post-call webhook: verify the signature, then write the call back."""
    if state.hub.multi:
        return await _tenant_post_call(request, state.hub)
    service = service_of(state)
    secret = service.settings.elevenlabs_webhook_secret
    if secret is None:
        raise PermissionDeniedException("post-call webhooks are disabled: set ELEVENLABS_WEBHOOK_SECRET")
    # Refused before the body is read: an unsigned request must not cost up to 8 MB of memory.
    signature = parse_signature(request.headers.get("elevenlabs-signature"))
    if signature is None:
        raise NotAuthorizedException("missing, malformed or stale ElevenLabs-Signature", headers=_CLOSE)
    body = await request.body()
    if not signature.matches(body, secret):
        raise NotAuthorizedException("missing, stale or wrong ElevenLabs-Signature")
    event: PostCallEvent = decode(body, PostCallEvent)
    if event.type != "post_call_transcription" or event.data is None:
        return json_response({"status": "ignored", "type": event.type})
    try:
        call = finished_call(event.data)
    except PayloadError as exc:
        raise ValidationException(str(exc)) from None
    return await _record(service, call)


async def _tenant_post_call(request: Request[Any, Any, Any], hub: Hub) -> Response[bytes]:
    """Post-call for a server of tenants: signed with the service's secret or the tenant's own (SPEC §12)."""
    secrets = {name: secret for name, secret in hub.elevenlabs_secrets().items() if secret}
    if not secrets:
        raise PermissionDeniedException("post-call webhooks are disabled: set ELEVENLABS_WEBHOOK_SECRET")
    signature = parse_signature(request.headers.get("elevenlabs-signature"))
    if signature is None:
        raise NotAuthorizedException("missing, malformed or stale ElevenLabs-Signature", headers=_CLOSE)
    body = await request.body()
    signed_by = {name for name, secret in secrets.items() if signature.matches(body, secret)}
    if not signed_by:
        raise NotAuthorizedException("missing, stale or wrong ElevenLabs-Signature")
    event: PostCallEvent = decode(body, PostCallEvent)
    if event.type != "post_call_transcription" or event.data is None:
        return json_response({"status": "ignored", "type": event.type})
    try:
        call = finished_call(event.data)
    except PayloadError as exc:
        raise ValidationException(str(exc)) from None
    found = hub.route(call.agent_id, call.agent_number or call.initiation_called_number)
    if found is None:
        hub.unclaimed.note("post-call", call.agent_id)
        return json_response({"status": "ignored", "reason": "no tenant claims this call's agent or number"})
    if "" not in signed_by and found.name not in signed_by:
        # Signed by another tenant's workspace: it may not write to this tenant's memory.
        raise NotAuthorizedException("missing, stale or wrong ElevenLabs-Signature")
    return await _record(found.service, call)


async def _record(service: Service, call: FinishedCall) -> Response[bytes]:
    """Write a finished call back to its caller's memory, and learn our own number from it."""
    memory = service.memory
    # Whichever way the call went, the agent's number is ours; the other party of a call we placed is not.
    memory.identities.learn_own(call.agent_number)
    if call.outbound:
        memory.identities.unlearn_own(call.external_number)
    who = memory.identities.identify(call.external_number)
    if who.key is None:
        who = memory.identities.identify(call.initiation_caller_id, call.initiation_called_number)
    key = who.key or memory.identities.key_for_call_sid(call.call_sid)
    if key is None:
        return json_response({"status": "ignored", "reason": "no usable caller number"})
    try:
        outcome = await memory.write_back(
            key,
            call.conversation_id,
            call.summary,
            call.started,
            call.fills,
            e164=who.caller_id.e164,
            legacy=who.legacy,
        )
    except OperationInProgress as exc:
        # A person's merge or rebase in the vault outlasted the wait: nothing written; a retry is welcome.
        raise ServiceUnavailableException(str(exc)) from None
    except GitError:
        # On disk but not committed: 503 makes ElevenLabs deliver again, which is idempotent.
        raise ServiceUnavailableException(NOT_COMMITTED) from None
    except WriteError as exc:
        # The caller's file is broken by hand; ElevenLabs retries later, perhaps after it is fixed.
        raise ServiceUnavailableException(f"cannot record the call yet: {exc}") from None
    except DiskError:
        raise ServiceUnavailableException(NOT_SAVED) from None
    return json_response({"status": outcome.value, "caller": phone.short(key)})
