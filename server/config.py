"""Settings: one table of every variable, read once at start-up from the environment (and `.env`).

Each variable is declared once, as a field of `Settings`: its name (the field's, upper-cased), type,
default and the line that documents it. `load_settings` converts the strings with `msgspec.convert`;
`.env.example` is rendered from the same table (`python -m server.config > .env.example`), and the
tests and the benchmark take the list of names from it. Nothing else reads the environment. A bad
value raises `ConfigError` naming the variable, so start-up stops with a message a person can act on.
"""

from __future__ import annotations

import ipaddress
import os
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import phonenumbers
from dotenv import dotenv_values


class ConfigError(ValueError):
    """A setting has a value the service cannot use; the message names the variable."""


def _doc(text: str, ge: float | None = None, le: float | None = None) -> msgspec.Meta:
    return msgspec.Meta(description=text, ge=ge, le=le)


# A secret shorter than this is a typo or a placeholder, not a secret.
_SECRET = msgspec.Meta(min_length=8)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service is configured with: the one table of variables. Built by `load_settings`."""

    vault_dir: Annotated[Path, _doc("Where the vault lives (created on first start, with its own git repository).")] = (
        Path("vault")
    )
    tenants_dir: Annotated[
        Path | None,
        _doc(
            "A folder of vaults, one per tenant (a business), each named by its folder and holding a tenant.md "
            "whose frontmatter lists its agent_ids and numbers. Set, it replaces VAULT_DIR: requests go to the "
            "tenant that claims their agent_id, else their called number. Unset: one vault, VAULT_DIR."
        ),
    ] = None
    host: Annotated[
        str,
        _doc(
            "Where the service listens. Keep 127.0.0.1 behind a reverse proxy (TLS) on the same machine; "
            "any other address is refused unless WEBHOOK_SECRET is set."
        ),
    ] = "127.0.0.1"
    port: Annotated[int, _doc("The port to listen on.", ge=0, le=65535)] = 8000
    webhook_secret: Annotated[
        Annotated[str, _SECRET] | None,
        _doc(
            "Shared secret ElevenLabs sends to the personalize webhook and the remember tool, as "
            '"Authorization: Bearer <secret>" or "X-Webhook-Secret: <secret>". Unset: the personalize webhook '
            "is open (loopback only) and the remember tool answers 403."
        ),
    ] = None
    elevenlabs_webhook_secret: Annotated[
        Annotated[str, _SECRET] | None,
        _doc("The HMAC secret ElevenLabs shows for your post-call webhook. Unset: post-call answers 403."),
    ] = None
    admin_api_key: Annotated[
        Annotated[str, _SECRET] | None,
        _doc("Bearer key for the /api routes and /health's details. Unset: the API answers 403."),
    ] = None
    phone_hash_key: Annotated[
        Annotated[str, _SECRET] | None,
        _doc(
            "Key for HMAC-SHA256 caller keys. Keep it secret, outside the vault, and backed up: without it no "
            "caller can be recognised. Unset: a key is created in the vault's .git folder (never committed). "
            'Make one with: python3 -c "import secrets; print(secrets.token_hex(32))"'
        ),
    ] = None
    default_region: Annotated[
        str | None,
        _doc("Region for numbers in national format, e.g. US or GB. Unset: the region of the called number."),
    ] = None
    agent_numbers: Annotated[
        tuple[str, ...],
        _doc(
            "The agent's own numbers, comma-separated. A call whose caller_id is one of them is outbound, and "
            "the other party (called_number) is the caller whose memory is used."
        ),
    ] = ()
    timezone: Annotated[
        str, _doc('The business time zone: decides which daily note is "today". IANA name, default UTC.')
    ] = "UTC"
    prompt_max_chars: Annotated[
        int,
        _doc(
            "Upper bound of the composed system prompt, in characters. The soul is always kept whole; then the "
            "caller's name and facts, the latest calls (saying how many older ones the recall tool can find), "
            "notes; what does not fit is dropped oldest first.",
            ge=500,
            le=1_000_000,
        ),
    ] = 12_000
    override_prompt: Annotated[
        bool,
        _doc(
            "Send the system prompt override. Turn it off if the agent's Security tab does not allow it: an "
            "override the agent has not enabled fails the call."
        ),
    ] = True
    override_first_message: Annotated[bool, _doc("Send the first message override (see OVERRIDE_PROMPT).")] = True
    custom_llm_extra_body: Annotated[
        bool,
        _doc(
            "Add custom_llm_extra_body to the personalize answer: the caller key (never the number) and whether the "
            "caller is known, so a custom LLM (ElevenLabs' Custom LLM: OpenClaw or any OpenAI-compatible endpoint) can "
            'look the caller up in the API. Enable "Custom LLM extra body" on the agent too. Off by default.'
        ),
    ] = False
    override_language: Annotated[
        bool,
        _doc(
            "Send a caller file's `language` as the language override (only a valid language code). Turn it on "
            "only if the agent's Security tab allows that override: otherwise every such call fails."
        ),
    ] = False
    override_voice: Annotated[
        bool, _doc("Send a caller file's `voice_id` as the voice override (see OVERRIDE_LANGUAGE).")
    ] = False
    elevenlabs_api_key: Annotated[
        Annotated[str, _SECRET] | None,
        _doc("ElevenLabs API key (xi-api-key) for `memory-bridge backfill` and BACKFILL_MINUTES. Unset: no backfill."),
    ] = None
    elevenlabs_api_url: Annotated[
        str, _doc("ElevenLabs' API, e.g. https://api.eu.residency.elevenlabs.io for EU data residency.")
    ] = "https://api.elevenlabs.io"
    backfill_minutes: Annotated[
        float,
        _doc(
            "Every so many minutes, the server writes back the last day's phone conversations that ElevenLabs "
            "holds and the vault lacks (post-call events that never arrived). 0: never. Needs ELEVENLABS_API_KEY.",
            ge=0.0,
            le=10_080.0,
        ),
    ] = 0.0
    store_phone_numbers: Annotated[
        bool,
        _doc("Also keep the caller's E.164 number in their file (for businesses that must call back). Off by default."),
    ] = False
    retain_calls_days: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=36_500)] | None,
        _doc(
            "Keep call lines (## Calls) for this many days: older ones are dropped from the files once an hour "
            "(history keeps them; forget --purge erases a caller's). Unset: kept for ever."
        ),
    ] = None
    git_author_name: Annotated[
        str, _doc("Author of the vault's commits. The machine's own git identity is never used.")
    ] = "memory-bridge"
    git_author_email: Annotated[str, _doc("E-mail address of that author.")] = "memory-bridge@localhost"
    git_remote: Annotated[
        str | None,
        _doc(
            "The git remote the vault syncs with (https://, ssh:// or git@host:path, git://, file://): the "
            "team's laptops and any second replica meet there. Credentials may be in the URL or come from a "
            "credential helper; they are never shown. ssh uses GIT_SSH_COMMAND. Unset: no sync."
        ),
    ] = None
    git_branch: Annotated[
        Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._/-]+$")], _doc("The branch the vault syncs on.")
    ] = "main"
    sync_seconds: Annotated[
        float, _doc("Seconds between fetches from GIT_REMOTE (a push event fetches at once).", ge=0.2, le=86_400.0)
    ] = 15.0
    sync_webhook_secret: Annotated[
        Annotated[str, _SECRET] | None,
        _doc(
            "Secret of the git host's push webhook (POST /webhook/git): GitHub, Gitea and Forgejo sign with it "
            "(X-Hub-Signature-256), GitLab sends it (X-Gitlab-Token). Unset: /webhook/git answers 403."
        ),
    ] = None
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], _doc("DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    ] = "INFO"
    log_format: Annotated[Literal["text", "json"], _doc("text, or json (one object per line).")] = "text"
    # Not in SPEC §9 but worth a knob.
    hand_edit_quiet_seconds: Annotated[
        float,
        _doc("Tuning: seconds a hand-edited file must stay unchanged before it is committed.", ge=0.0, le=3600.0),
    ] = 3.0
    reconcile_seconds: Annotated[
        float, _doc("Tuning: seconds between reconcile scans of the whole vault.", ge=0.1, le=86_400.0)
    ] = 60.0
    git_wait_seconds: Annotated[
        float,
        _doc(
            "Tuning: seconds a write waits for a person's merge, rebase or cherry-pick in the vault to end before "
            "it is refused (503, nothing written). Commits, call counting and hand edits wait without a limit.",
            ge=0.0,
            le=86_400.0,
        ),
    ] = 60.0
    personalize_deadline_ms: Annotated[
        float,
        _doc(
            "Tuning: the personalize webhook's internal deadline in milliseconds, past which it answers with the "
            "defaults.",
            ge=1.0,
            le=10_000.0,
        ),
    ] = 500.0
    head_timeout_seconds: Annotated[
        float,
        _doc(
            "Tuning: seconds a client may take to send a request's head (the request line and headers) before "
            "its connection is closed. A real client sends it at once; a client that connects and sends nothing, "
            "or trickles its headers, would otherwise hold a connection for ever.",
            ge=1.0,
            le=3600.0,
        ),
    ] = 10.0

    def __post_init__(self) -> None:
        # Checks a type cannot express; a ValueError here becomes a ValidationError of `convert`.
        if self.default_region is not None and self.default_region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("DEFAULT_REGION must be a two-letter region code such as US or GB")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("TIMEZONE must be an IANA time zone such as Europe/London") from None

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The business time zone, used to decide what "today" is."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def is_loopback(self) -> bool:
        """Whether the bind address only accepts connections from this machine."""
        return is_loopback_host(self.host)


_FIELDS = msgspec.structs.fields(Settings)
# Every environment variable the settings are read from, in the table's order.
VARIABLES = tuple(field.name.upper() for field in _FIELDS)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# How a raw string is tidied before conversion, for the variables whose spelling people vary.
_TIDY = {
    "DEFAULT_REGION": str.upper,
    "LOG_LEVEL": str.upper,
    "LOG_FORMAT": str.lower,
}


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and any address in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raw_value(field: msgspec.structs.FieldInfo, raw: str) -> object:
    """A variable's string as `convert` should see it: booleans spelt out, lists split."""
    value = _TIDY.get(field.name.upper(), str)(raw.strip())
    if getattr(field.type, "__origin__", field.type) is bool:
        lowered = value.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else value
    if field.name == "agent_numbers":
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


# msgspec's words for a bad value, in a person's words.
_WORDING = (
    ("Expected `str` of length >= 8", "too short to be a secret (use at least 8 characters)"),
    ("Expected", "expected"),
    ("`str`", "text"),
    ("`int`", "a whole number"),
    ("`float`", "a number"),
    ("`bool`", "true or false"),
    ("Invalid enum value", "not one of the choices:"),
)


def _problem(error: msgspec.ValidationError) -> str:
    """A conversion error as a person reads it: the variable's name first, never a secret's value."""
    text = str(error)
    found = re.search(r" - at `\$\.(\w+)`$", text)
    if found is None:  # raised by Settings.__post_init__, which names the variable itself
        return text.removesuffix(" - at `$`")
    text = text[: found.start()]
    for msgspec_words, ours in _WORDING:
        text = text.replace(msgspec_words, ours)
    return f"{found.group(1).upper()}: {text}"


def _e164(numbers: tuple[str, ...], region: str | None) -> tuple[str, ...]:
    e164 = []
    for number in numbers:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            raise ConfigError("AGENT_NUMBERS holds an entry that is not a phone number") from None
        e164.append(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return tuple(e164)


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
    """Build the settings from `environ` (default: the process environment) over an optional `.env` file.

    Real environment variables win over the file, as with most twelve-factor tools; an empty value
    means the default.
    """
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    given = {
        field.name: _raw_value(field, raw)
        for field in _FIELDS
        if (raw := values.get(field.name.upper())) is not None and raw.strip()
    }
    try:
        settings = msgspec.convert(given, Settings, strict=False, dec_hook=_path)
    except msgspec.ValidationError as exc:
        raise ConfigError(_problem(exc)) from None
    settings = msgspec.structs.replace(
        settings,
        vault_dir=settings.vault_dir.expanduser(),
        agent_numbers=_e164(settings.agent_numbers, settings.default_region),
    )
    check_listen_address(settings)
    return settings


def check_listen_address(settings: Settings) -> None:
    """Refuse to expose the open personalize webhook beyond this machine (SPEC §5)."""
    if not settings.is_loopback and not settings.webhook_secret:
        raise ConfigError(
            f"HOST is {settings.host}, which other machines can reach, but WEBHOOK_SECRET is not set: "
            "set WEBHOOK_SECRET (and send it from ElevenLabs) or bind to 127.0.0.1"
        )


def _example_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"./{value}" if isinstance(value, Path) else str(value)


def env_example() -> str:
    """`.env.example`, rendered from the table: each variable's doc line and its default."""
    out = [
        "# memory-bridge settings. Copy to .env and fill in; real environment variables win over this file.",
        "# A bad value stops start-up with a message naming the variable. Rendered from server/config.py.",
    ]
    for field in _FIELDS:
        doc = next(m.description for m in getattr(field.type, "__metadata__", ()) if isinstance(m, msgspec.Meta))
        out += ["", *_wrap(doc or ""), f"{field.name.upper()}={_example_value(field.default)}"]
    return "\n".join(out) + "\n"


def _wrap(text: str, width: int = 100) -> list[str]:
    lines, line = [], "#"
    for word in text.split():
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "#"
        line += " " + word
    return [*lines, line]


def git_dir_from_environment(environ: Mapping[str, str] | None = None) -> Path | None:
    """The repository named by GIT_DIR, which git sets for the commands it starts when it was told one."""
    value = (os.environ if environ is None else environ).get("GIT_DIR", "")
    return Path(value) if value.strip() else None


if __name__ == "__main__":
    print(env_example(), end="")
