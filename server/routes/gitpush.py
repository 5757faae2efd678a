"""`POST /webhook/git`: the git host says the vault's remote changed; sync fetches and merges at once (SPEC §11).

GitHub, Gitea and Forgejo sign the body with `SYNC_WEBHOOK_SECRET` (`X-Hub-Signature-256:
sha256=<hex>`); GitLab sends the secret itself (`X-Gitlab-Token`). The body is not interpreted: any
signed event (a push, GitHub's ping) is a reason to fetch, and fetching twice costs nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, NotFoundException, PermissionDeniedException

from server.auth import same
from server.routes.replies import WEBHOOK_BODY_LIMIT, json_response, service_of

# Push events list every commit; a big push is a big body.
GIT_EVENT_BODY_LIMIT = 16 * WEBHOOK_BODY_LIMIT


def signed(body: bytes, signature: str | None, token: str | None, secret: str) -> bool:
    """Whether a git host's event carries `secret`: as GitHub's HMAC signature or as GitLab's token."""
    if signature is not None:
        algorithm, _, digest = signature.partition("=")
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return algorithm == "sha256" and same(digest.strip().lower(), expected)
    return same(token, secret)


@post(["/webhook/git", "/t/{tenant:str}/webhook/git"], status_code=200, request_max_body_size=GIT_EVENT_BODY_LIMIT)
async def git_event(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """A push event from the git host: fetch and merge now instead of at the next round."""
    tenant = request.path_params.get("tenant")
    service = service_of(state) if tenant is None else state.hub.named(tenant)
    if service is None:
        raise NotFoundException("unknown tenant")
    secret = service.settings.sync_webhook_secret
    if secret is None:
        raise PermissionDeniedException("push events are disabled: set SYNC_WEBHOOK_SECRET")
    body = await request.body()
    if not signed(body, request.headers.get("x-hub-signature-256"), request.headers.get("x-gitlab-token"), secret):
        raise NotAuthorizedException("missing or wrong X-Hub-Signature-256 or X-Gitlab-Token")
    if not service.sync.enabled:
        return json_response({"status": "ignored", "reason": "GIT_REMOTE is not set"})
    service.sync.poke()
    return json_response({"status": "fetching"})
