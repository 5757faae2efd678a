"""The agent's webhook tools (SPEC §6, §16): `POST /tools/remember` saves a fact mid-call, `POST /tools/recall`
looks back through the caller's own memory; always 200, in words the agent can say."""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Request, post
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException
from litestar.params import JSONBody

from server import phone, text
from server.auth import has_webhook_secret, webhook_guard
from server.elevenlabs import RecallAnswer, RecallStatus, ToolAnswer, ToolRecall, ToolRemember
from server.gitrun import GitError
from server.gitstate import OperationInProgress
from server.hub import Hub
from server.recall import recall
from server.routes.replies import WEBHOOK_BODY_LIMIT, service_of
from server.service import Service
from server.vault import DiskError
from server.writes import FileFull, WriteError

log = logging.getLogger("memory_bridge.tools")


def _tool_service(
    state: State, request: Request[Any, Any, Any], agent_id: str | None, called_number: str | None, tool: str
) -> Service | None:
    """The service a tool call is for (by agent id, else called number, with tenants); None: no tenant claims it.

    With tenants the webhook secret is checked against the claiming tenant's own as well.
    """
    hub: Hub = state.hub
    if not hub.multi:
        return service_of(state)
    found = hub.route(agent_id, called_number)
    if found is None:
        hub.unclaimed.note(tool, agent_id)
        return None
    allowed = hub.webhook_secrets(found.name)
    authorization, x_secret = request.headers.get("authorization"), request.headers.get("x-webhook-secret")
    if not any(has_webhook_secret(authorization, x_secret, secret) for secret in allowed):
        raise NotAuthorizedException("missing or wrong webhook secret")
    return found.service


@post("/tools/recall", status_code=200, request_max_body_size=WEBHOOK_BODY_LIMIT, guards=[webhook_guard])
async def tool_recall(data: JSONBody[ToolRecall], state: State, request: Request[Any, Any, Any]) -> RecallAnswer:
    """The agent's `recall` tool: the caller's own memory lines that best match a short query, from the index."""
    started = time.perf_counter()
    service = _tool_service(state, request, data.agent_id, data.called_number, "recall tool")
    if service is None:
        return RecallAnswer(RecallStatus.NOTHING, "")
    who = service.memory.identities.identify(data.caller_id, data.called_number)
    if who.key is None:  # withheld, not a phone, or blocked: nobody's memory
        return RecallAnswer(RecallStatus.NOTHING, "")
    found = recall(service.memory.identities.lookup(who), text.one_line(data.query or ""))
    log.debug(
        "recall for %s: %d lines in %.2f ms", phone.short(who.key), len(found), (time.perf_counter() - started) * 1e3
    )
    return RecallAnswer(RecallStatus.FOUND if found else RecallStatus.NOTHING, "\n".join(found))


@post("/tools/remember", status_code=200, request_max_body_size=WEBHOOK_BODY_LIMIT, guards=[webhook_guard])
async def tool_remember(data: JSONBody[ToolRemember], state: State, request: Request[Any, Any, Any]) -> ToolAnswer:
    """The agent's `remember` tool: save one fact about the caller, mid-call."""
    service = _tool_service(state, request, data.agent_id, data.called_number, "remember tool")
    if service is None:
        return ToolAnswer("not_saved", "I can't save that on this call: this agent is not set up to remember.")
    who = service.memory.identities.identify(data.caller_id, data.called_number)
    if who.key is None:
        return ToolAnswer("not_saved", "I can't save that on this call, because your number is withheld.")
    fact = data.fact or ""
    problem = text.check(fact, text.MAX_FACT_CHARS).problem
    if problem is text.Problem.EMPTY:  # nothing but spaces and control characters
        return ToolAnswer("not_saved", "I didn't catch what to remember. Could you say it again?")
    if problem is text.Problem.TOO_LONG:
        return ToolAnswer("not_saved", "That's too long for me to save. Could you say it in one short sentence?")
    try:
        await service.memory.add_fact(
            who.key, fact, "tool", e164=who.caller_id.e164, legacy=who.legacy, conversation=data.conversation_id
        )
    except OperationInProgress:
        # Someone is merging the vault's history by hand and took longer than the wait: nothing was written.
        return ToolAnswer("not_saved", "Sorry, I couldn't save that just now. Please mention it again next time.")
    except FileFull:
        return ToolAnswer("not_saved", "I couldn't save that: there's no room left in my notes for you.")
    except WriteError as exc:
        return ToolAnswer("not_saved", f"I couldn't save that: {exc}.")
    except DiskError:
        return ToolAnswer("not_saved", "I couldn't save that just now because of a problem on our side. Sorry.")
    except GitError:
        # Nothing is acknowledged that is not committed: the agent must not tell the caller it is saved.
        return ToolAnswer("not_saved", "Sorry, I couldn't save that just now. Please mention it again next time.")
    return ToolAnswer("saved", "Got it, I've made a note of that.")
