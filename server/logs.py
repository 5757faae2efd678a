"""Logging set-up: text or JSON lines, and a last line of defence against phone numbers (SPEC §7).

The code never logs a raw number; the redaction filter makes sure a number that slips through in a
library's message or an exception text does not reach the log either.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

from server.remote import without_credentials

if TYPE_CHECKING:  # not imported at run time: the merge driver git starts must start fast
    from server.config import Settings

# What phonenumbers accepts between the digits of a number (spaces of any kind, dashes of any kind,
# dots, slashes, brackets, tildes), and the same characters percent-encoded in a URL.
_SEPARATOR = (
    r"(?:[\s\-.()/\[\]~\u00ad\u2010-\u2015\u2212\u30fc\uff0d\uff0f\uff08\uff09\uff3b\uff3d\uff5e\u2053\u223c]"
    r"|%2[0589]|%2[dDeEfF])"
)
# A leading plus, written or percent-encoded (`/api/callers/%2B1415...`).
_PLUS = r"(?:[+\uff0b]|%2[bB])"
# A calendar date (2026-11-25) is a token of its own, so that a date in a message is not taken for a
# number; anything after it is judged on its own.
_DATE = r"(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?!\d)"
# A run of digits (any script's, as phonenumbers reads them) with up to four separator characters
# between any two digits, not after a letter or digit. Always the longest run, never backtracked
# (whether a letter follows is checked after the match), so a long line costs linear time.
_RUN = rf"(?<![A-Za-z0-9]){_PLUS}?{_SEPARATOR}{{0,4}}\d(?:{_SEPARATOR}{{0,4}}\d)*"
_CANDIDATE = re.compile(rf"(?P<date>{_DATE})|{_RUN}")
_STARTS_WITH_PLUS = re.compile(_PLUS)
# Every number written with its country code has at least 7 digits (+690 3101 is the shortest), as
# has every national number but a few small territories' (fewer digits cannot be told from a count).
MIN_PHONE_DIGITS = 7
_REDACTED = "[phone]"
_CONFIGURED = "_memory_bridge_configured"


def _redact_candidate(match: re.Match[str]) -> str:
    text, end = match.group(), match.end()
    if match.group("date") is not None:
        return text
    after = match.string[end : end + 1]
    if after.isascii() and after.isalnum() and not _STARTS_WITH_PLUS.match(text):
        return text  # part of a word such as a hex hash, not a number (a hash has no plus)
    digits = sum(char.isdigit() for char in text)
    return _REDACTED if digits >= MIN_PHONE_DIGITS else text


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Replace every configured secret, a URL's credentials, and every run of 7+ digits that may be a phone number.

    A run is digits with the separators people and phonenumbers use between them (`+1 (415) 555-0177`,
    `+44 20  7946 0958`, `415.555.0177`, `%2B14155550177`), whatever the grouping; dates stay.
    """
    for secret in secrets:
        text = text.replace(secret, "[secret]")
    return _CANDIDATE.sub(_redact_candidate, without_credentials(text))


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


def _route_uncaught_exceptions() -> None:
    """Send uncaught exceptions (main thread and other threads) through logging, so they are redacted.

    Python prints them to stderr itself otherwise, past every filter, with the exception's text.
    """
    uncaught = logging.getLogger("memory_bridge.uncaught")

    def main_hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        uncaught.critical("uncaught exception", exc_info=(kind, value, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        name = args.thread.name if args.thread is not None else "?"
        uncaught.error(
            "uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
        )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook


def configure(settings: Settings) -> None:
    """Send every logger (ours, uvicorn's, Litestar's) through one redacting handler on stderr."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    secrets = (
        settings.webhook_secret,
        settings.elevenlabs_webhook_secret,
        settings.admin_api_key,
        settings.phone_hash_key,
        settings.sync_webhook_secret,
    )
    handler.addFilter(RedactingFilter(tuple(s for s in secrets if s)))
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    setattr(handler, _CONFIGURED, True)
    _route_uncaught_exceptions()
    root.handlers = [h for h in root.handlers if not getattr(h, _CONFIGURED, False)] + [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every batch at INFO
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True


def configure_command(prefix: str) -> None:
    """Log INFO and up to stderr, redacted, each line after `prefix`: for a command git starts (the merge driver).

    Reads no settings: git runs it in a person's clone too, where there is no `.env` to read.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    setattr(handler, _CONFIGURED, True)
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, _CONFIGURED, False)] + [handler]
    root.setLevel(logging.INFO)
