"""What every route answers with: JSON bodies, the one error shape, body limits and the refusals of writes."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException

from server.service import Service

WEBHOOK_BODY_LIMIT = 64 * 1024
POST_CALL_BODY_LIMIT = 8 * 1024 * 1024  # transcripts of long calls are big; audio events bigger still
API_BODY_LIMIT = 64 * 1024

# A write that reached the vault but not git is not acknowledged: the client should retry.
NOT_COMMITTED = "saved in the vault, but git failed to commit it (see /health); retry later"
# A write the disk refused: nothing was saved.
NOT_SAVED = "not saved: the vault's disk refused the write (see /health); retry later"

_encoder = msgspec.json.Encoder()


def service_of(state: State) -> Service:
    """The running service, which the app's lifespan put in its state (one vault; tenants have one each)."""
    service = state.get("service")
    if service is None:
        raise NotFoundException("this server serves tenants: name one, as in /t/{tenant}/api/...")
    return service  # type: ignore[no-any-return]


def error_body(status: int, detail: str) -> bytes:
    """The body of every error answer: `{"status_code": ..., "detail": ...}`."""
    return _encoder.encode({"status_code": status, "detail": detail})


def error_response(status: int, detail: str) -> Response[bytes]:
    """An error answer in that shape."""
    return Response(error_body(status, detail), status_code=status, media_type="application/json")


def json_response(content: Any, status: int = 200) -> Response[bytes]:
    """`content` encoded as JSON."""
    return Response(_encoder.encode(content), status_code=status, media_type="application/json")


def decode(body: bytes, kind: type[Any]) -> Any:
    """A JSON body as `kind`, or a 400 that says what is wrong with it."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ValidationException(f"invalid request body: {exc}") from None
    except msgspec.DecodeError:
        raise ValidationException("the request body is not valid JSON") from None
