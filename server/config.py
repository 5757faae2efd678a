"""Settings: read once at start-up from the environment (and an optional `.env`), then passed down.

Every variable of SPEC §9 lives here and nowhere else reads the environment. A bad value raises
`ConfigError` naming the variable, so start-up stops with a message a person can act on.
"""

from __future__ import annotations

import ipaddress
import os
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec
import phonenumbers
from dotenv import dotenv_values

# Every environment variable the settings are read from: SPEC §9 and three tuning knobs.
VARIABLES = (
    "VAULT_DIR",
    "HOST",
    "PORT",
    "WEBHOOK_SECRET",
    "ELEVENLABS_WEBHOOK_SECRET",
    "ADMIN_API_KEY",
    "PHONE_HASH_KEY",
    "DEFAULT_REGION",
    "AGENT_NUMBERS",
    "TIMEZONE",
    "PROMPT_MAX_CHARS",
    "OVERRIDE_PROMPT",
    "OVERRIDE_FIRST_MESSAGE",
    "STORE_PHONE_NUMBERS",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "HAND_EDIT_QUIET_SECONDS",
    "RECONCILE_SECONDS",
    "PERSONALIZE_DEADLINE_MS",
)


class ConfigError(ValueError):
    """A setting has a value the service cannot use; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service is configured with. Built by `load_settings`."""

    vault_dir: Path = Path("vault")
    host: str = "127.0.0.1"
    port: int = 8000
    webhook_secret: str | None = None
    elevenlabs_webhook_secret: str | None = None
    admin_api_key: str | None = None
    phone_hash_key: str | None = None
    default_region: str | None = None
    agent_numbers: tuple[str, ...] = ()
    timezone: str = "UTC"
    prompt_max_chars: int = 12_000
    override_prompt: bool = True
    override_first_message: bool = True
    store_phone_numbers: bool = False
    git_author_name: str = "memory-bridge"
    git_author_email: str = "memory-bridge@localhost"
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    # Not in SPEC §9 but worth a knob: how long a hand-edited file must stay quiet before it is
    # committed, how often the reconcile scan runs, and the personalize deadline.
    hand_edit_quiet_seconds: float = 3.0
    reconcile_seconds: float = 60.0
    personalize_deadline_ms: float = 500.0

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The business time zone, used to decide what "today" is."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def is_loopback(self) -> bool:
        """Whether the bind address only accepts connections from this machine."""
        return is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and any address in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _float(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _secret(name: str, raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if len(value) < 8:
        raise ConfigError(f"{name} is too short to be a secret (use at least 8 characters)")
    return value


def _region(raw: str) -> str | None:
    value = raw.strip().upper()
    if not value:
        return None
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"DEFAULT_REGION must be a two-letter region code such as US or GB, not {raw!r}")
    return value


def _agent_numbers(raw: str, region: str | None) -> tuple[str, ...]:
    numbers = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            parsed = phonenumbers.parse(part, region)
        except phonenumbers.NumberParseException:
            raise ConfigError("AGENT_NUMBERS holds an entry that is not a phone number") from None
        numbers.append(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return tuple(numbers)


def _timezone(raw: str) -> str:
    value = raw.strip() or "UTC"
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"TIMEZONE must be an IANA time zone such as Europe/London, not {raw!r}") from None
    return value


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
    """Build the settings from `environ` (default: the process environment) over an optional `.env` file.

    Real environment variables win over the file, as with most twelve-factor tools.
    """
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)

    def get(name: str) -> str | None:
        raw = values.get(name)
        return None if raw is None else raw

    kwargs: dict[str, object] = {}
    if (raw := get("VAULT_DIR")) and raw.strip():
        kwargs["vault_dir"] = Path(raw.strip()).expanduser()
    if (raw := get("HOST")) and raw.strip():
        kwargs["host"] = raw.strip()
    if (raw := get("PORT")) is not None and raw.strip():
        kwargs["port"] = _int("PORT", raw, 0, 65535)
    for name in ("WEBHOOK_SECRET", "ELEVENLABS_WEBHOOK_SECRET", "ADMIN_API_KEY", "PHONE_HASH_KEY"):
        if (raw := get(name)) is not None:
            kwargs[name.lower()] = _secret(name, raw)
    region = _region(get("DEFAULT_REGION") or "")
    kwargs["default_region"] = region
    if raw := get("AGENT_NUMBERS"):
        kwargs["agent_numbers"] = _agent_numbers(raw, region)
    if (raw := get("TIMEZONE")) is not None:
        kwargs["timezone"] = _timezone(raw)
    if (raw := get("PROMPT_MAX_CHARS")) is not None and raw.strip():
        kwargs["prompt_max_chars"] = _int("PROMPT_MAX_CHARS", raw, 500, 1_000_000)
    for name in ("OVERRIDE_PROMPT", "OVERRIDE_FIRST_MESSAGE", "STORE_PHONE_NUMBERS"):
        if (raw := get(name)) is not None and raw.strip():
            kwargs[name.lower()] = _bool(name, raw)
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL"):
        if (raw := get(name)) is not None and raw.strip():
            kwargs[name.lower()] = raw.strip()
    if (raw := get("LOG_LEVEL")) is not None and raw.strip():
        level = raw.strip().upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {raw!r}")
        kwargs["log_level"] = level
    if (raw := get("LOG_FORMAT")) is not None and raw.strip():
        fmt = raw.strip().lower()
        if fmt not in {"text", "json"}:
            raise ConfigError(f"LOG_FORMAT must be text or json, not {raw!r}")
        kwargs["log_format"] = fmt
    if (raw := get("HAND_EDIT_QUIET_SECONDS")) is not None and raw.strip():
        kwargs["hand_edit_quiet_seconds"] = _float("HAND_EDIT_QUIET_SECONDS", raw, 0.0, 3600.0)
    if (raw := get("RECONCILE_SECONDS")) is not None and raw.strip():
        kwargs["reconcile_seconds"] = _float("RECONCILE_SECONDS", raw, 0.1, 86_400.0)
    if (raw := get("PERSONALIZE_DEADLINE_MS")) is not None and raw.strip():
        kwargs["personalize_deadline_ms"] = _float("PERSONALIZE_DEADLINE_MS", raw, 1.0, 10_000.0)

    settings = Settings(**kwargs)  # type: ignore[arg-type]
    check_listen_address(settings)
    return settings


def check_listen_address(settings: Settings) -> None:
    """Refuse to expose the open personalize webhook beyond this machine (SPEC §5)."""
    if not settings.is_loopback and not settings.webhook_secret:
        raise ConfigError(
            f"HOST is {settings.host}, which other machines can reach, but WEBHOOK_SECRET is not set: "
            "set WEBHOOK_SECRET (and send it from ElevenLabs) or bind to 127.0.0.1"
        )
