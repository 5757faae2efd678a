"""Who may call what: the webhook secret, the admin key, compared in constant time (SPEC §5).

The personalize route checks its headers by hand (it is a bare ASGI route); every other route uses
the guards at the bottom of this module.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from server.config import Settings


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def same(given: str | None, expected: str) -> bool:
    """Whether `given` is `expected`, in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def has_webhook_secret(authorization: str | None, x_webhook_secret: str | None, secret: str) -> bool:
    """Whether a request's headers carry `secret` as a Bearer token or as `X-Webhook-Secret`."""
    return same(bearer(authorization), secret) or same(x_webhook_secret, secret)


def is_admin(authorization: str | None, settings: Settings) -> bool:
    """Whether an `Authorization` header carries `ADMIN_API_KEY` (never, while it is not set)."""
    return settings.admin_api_key is not None and same(bearer(authorization), settings.admin_api_key)


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
    if not is_admin(request.headers.get("authorization"), settings):
        raise NotAuthorizedException("missing or wrong API key")


# Guards are async: Litestar runs a sync guard in a worker thread, a thread hop on every request.
async def webhook_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for the agent's tools: `WEBHOOK_SECRET` required (with tenants, it or a tenant's own)."""
    hub = connection.app.state.hub
    if not hub.multi:
        require_webhook_secret(connection, hub.settings)
        return
    # The route checks that the secret is its tenant's (or the service's) once the body names the tenant.
    secrets = [s for s in [hub.settings.webhook_secret, *(t.webhook for t in hub.secrets.values())] if s]
    if not secrets:
        raise PermissionDeniedException("this endpoint is disabled: set WEBHOOK_SECRET to enable it")
    headers = connection.headers
    if not any(has_webhook_secret(headers.get("authorization"), headers.get("x-webhook-secret"), s) for s in secrets):
        raise NotAuthorizedException("missing or wrong webhook secret")


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for the REST API."""
    require_admin(connection, connection.app.state.hub.settings)
