"""Logging set-up: text or JSON lines, and a last line of defence against phone numbers (SPEC §7).

The code never logs a raw number; the redaction filter makes sure a number that slips through in a
library's message or an exception text does not reach the log either.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from server.config import Settings

# An international number (+ and 7-15 digits, separators allowed), or a bare run of 10-15 digits
# that is not part of a longer token such as a hex hash.
_PHONE = re.compile(r"(?<![\w+])\+\d(?:[\s\-.()]?\d){6,14}(?!\w)|(?<![\w.])\d{10,15}(?![\w.])")
_REDACTED = "[phone]"
_CONFIGURED = "_memory_bridge_configured"


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Replace anything that looks like a phone number, and every configured secret."""
    for secret in secrets:
        text = text.replace(secret, "[secret]")
    return _PHONE.sub(_REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and exception text) with phone numbers and secrets redacted."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message, self.secrets)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def configure(settings: Settings) -> None:
    """Send every logger (ours, uvicorn's, Litestar's) through one redacting handler on stderr."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    secrets = (
        settings.webhook_secret,
        settings.elevenlabs_webhook_secret,
        settings.admin_api_key,
        settings.phone_hash_key,
    )
    handler.addFilter(RedactingFilter(tuple(s for s in secrets if s)))
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    setattr(handler, _CONFIGURED, True)
    root.handlers = [h for h in root.handlers if not getattr(h, _CONFIGURED, False)] + [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every batch at INFO
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
