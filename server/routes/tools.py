"""`POST /tools/remember`: the agent saves a fact about the caller mid-call; always 200, in words it can say."""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException

from server import text
from server.auth import has_webhook_secret, webhook_guard
from server.elevenlabs import ToolAnswer, ToolRemember
from server.gitrun import GitError
from server.gitstate import OperationInProgress
from server.hub import Hub
from server.routes.replies import WEBHOOK_BODY_LIMIT, service_of
from server.vault import DiskError
from server.writes import FileFull, WriteError


@post("/tools/remember", status_code=200, request_max_body_size=WEBHOOK_BODY_LIMIT, guards=[webhook_guard])
async def tool_remember(data: ToolRemember, state: State, request: Request[Any, Any, Any]) -> ToolAnswer:
    """The agent's `remember` tool: save one fact about the caller, mid-call."""
    hub: Hub = state.hub
    if hub.multi:
        found = hub.route(data.agent_id, data.called_number)
        if found is None:
            hub.unclaimed.note("remember tool", data.agent_id)
            return ToolAnswer("not_saved", "I can't save that on this call: this agent is not set up to remember.")
        service = found.service
        allowed = hub.webhook_secrets(found.name)
        authorization, x_secret = request.headers.get("authorization"), request.headers.get("x-webhook-secret")
        if not any(has_webhook_secret(authorization, x_secret, secret) for secret in allowed):
            raise NotAuthorizedException("missing or wrong webhook secret")
    else:
        service = service_of(state)
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
