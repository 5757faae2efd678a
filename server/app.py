"""The Litestar app: the routes of SPEC §5 (one module each in `server.routes`), errors and start-up.

Every error is JSON in one shape (`{"status_code": ..., "detail": ...}`); bad input is a 4xx, never a
500. The service (vault, index, git writer, watcher) is opened and started in the app's lifespan.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp, Receive, Scope, Send

from server.config import Settings
from server.hub import Hub
from server.requestlog import Refusals
from server.routes.api import api, tenant_api
from server.routes.gitpush import git_event
from server.routes.health import health
from server.routes.personalize import PATH, personalize, serve_personalize
from server.routes.postcall import post_call
from server.routes.replies import API_BODY_LIMIT, error_body, error_response
from server.routes.tools import tool_recall, tool_remember
from server.service import open_service
from server.serving import children_watched_without_threads
from server.sync import SyncError
from server.tenantwatch import serve_tenants

log = logging.getLogger("memory_bridge.http")


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, HTTPException):
        return error_response(exc.status_code, exc.detail)
    log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
    return error_response(500, "internal error; see the server log")


def _refused(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    # Every refusal (a 4xx but 404, which is an answer) of the Litestar routes, logged at a bounded rate
    # (SPEC §13), by the route's pattern: a path may hold a caller's number. The answer is as before.
    if exc.status_code < 500 and exc.status_code != 404:
        handler = request.scope.get("route_handler")
        route = next(iter(handler.paths), request.url.path) if handler is not None else request.url.path
        request.app.state.refusals.refused(route, exc.status_code, " ".join(str(exc.detail).split())[:200])
    response = error_response(exc.status_code, exc.detail)
    for name, value in (exc.headers or {}).items():  # e.g. `connection: close` for a body left unread
        response.set_header(name, value)
    return response


def _too_deep(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # msgspec refuses JSON nested past its recursion limit, in our decoding and in Litestar's alike;
    # that is bad input, not our failure.
    return error_response(400, "the request body is nested too deeply")


@asynccontextmanager
async def _children_watched(app: Litestar) -> AsyncIterator[None]:
    with children_watched_without_threads():  # from before the service starts its first process
        yield


def create_app(settings: Settings) -> Litestar:
    """The Litestar app for one vault. The vault is opened and indexed before the first request."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.refusals = Refusals()  # the refusal log lines (SPEC §13), for one vault or for tenants
        if settings.tenants_dir is not None:
            async with serve_tenants(app, settings):
                yield
            return
        try:
            service = open_service(settings)
        except SyncError as exc:
            log.error("%s", exc)  # what to do, in one line: no traceback to read through
            raise
        await service.start()
        app.state.service = service
        app.state.hub = Hub(settings, {"": service})
        app.state.answers = app.state.hub.answers
        log.info("memory-bridge ready in %.2f s on %s:%d", service.ready_seconds, settings.host, settings.port)
        try:
            yield
        finally:
            await service.stop()

    return Litestar(
        route_handlers=[personalize, post_call, tool_remember, tool_recall, git_event, health, api, tenant_api],
        lifespan=[_children_watched, lifespan],  # the first is entered first and left last
        exception_handlers={500: _internal_error, HTTPException: _refused, RecursionError: _too_deep},
        openapi_config=OpenAPIConfig(title="memory-bridge", version="0.1.0"),
        request_max_body_size=API_BODY_LIMIT,
        logging_config=None,
    )


def create_asgi(settings: Settings) -> ASGIApp:
    """What uvicorn serves: `create_app`'s app, with each call to personalize taken before Litestar's router.

    Personalize is the hot path and already a bare ASGI route that never raises and answers every
    call itself; taking it here spares each call Litestar's router and exception middleware, about
    a tenth of its cost (BENCHMARKS.md). Every other request, and personalize with another method or
    over a websocket, goes through Litestar as before.
    """
    app = create_app(settings)

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"] == PATH and scope["method"] == "POST":
            scope["app"] = app
            try:
                await serve_personalize(scope, receive, send)
            except Exception:
                # Unreachable by design; kept so an error is still the one JSON shape, not uvicorn's text.
                log.exception("personalize failed outside its answer")
                with contextlib.suppress(Exception):  # the answer may have started already
                    await _send_500(send)
            return
        await app(scope, receive, send)

    return serve


async def _send_500(send: Send) -> None:
    body = error_body(500, "internal error; see the server log")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
