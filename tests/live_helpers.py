"""Helpers for the end-to-end tests over the live server: hand-written vault files and answer checks."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from server.phone import caller_key
from tests.conftest import MARIA, OTHER, PHONE_HASH_KEY, LiveServer, git

BUILTIN_VARIABLES = (
    "caller_name",
    "caller_known",
    "call_count",
    "last_call_date",
    "last_call_summary",
    "caller_memory",
    "daily_notes",
)
SOURCES = ("api", "webhook", "tool", "cli", "hand-edit")


def key_for(e164: str) -> str:
    """The caller key the test servers give a number (they all run with PHONE_HASH_KEY)."""
    return caller_key(e164, PHONE_HASH_KEY.encode())


MARIA_KEY = key_for(MARIA)
OTHER_KEY = key_for(OTHER)


def today() -> str:
    """Today in the test servers' business time zone (UTC, the default)."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def caller_md(
    e164: str,
    *,
    name: str = "Maria Lopez",
    facts: Iterable[str] = ("Prefers morning appointments", "Has a dog named Rex"),
    calls: Iterable[str] = ("2026-11-20 14:02 · Asked to move her dentist appointment to Friday. (conv_8901k5zv)",),
    notes: str = "Free text a person wrote. Kept as it is and shown to the agent.",
    call_count: int = 3,
    extra: str = "",
) -> str:
    """A caller file as a person writes it, in the layout of SPEC §2."""
    fact_lines = "".join(f"- {fact}\n" for fact in facts)
    call_lines = "".join(f"- {call}\n" for call in calls)
    return (
        "---\n"
        f'phone_hash: "{key_for(e164)}"\n'
        f"name: {json.dumps(name)}\n"
        "aliases:\n"
        f"  - {json.dumps(name)}\n"
        f"call_count: {call_count}\n"
        "first_call: 2026-11-01\n"
        "last_call: 2026-11-20\n"
        f"{extra}"
        "---\n"
        f"# {name}\n\n"
        f"## Facts\n{fact_lines}\n"
        f"## Calls\n{call_lines}\n"
        f"## Notes\n{notes}\n"
    )


def frontmatter(path: Path) -> dict[str, Any]:
    """The YAML frontmatter of a vault file, read independently of the server's parser."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{path} has no frontmatter"
    block = text[4 : text.index("\n---\n", 3)]
    meta = yaml.safe_load(block) or {}
    assert isinstance(meta, dict)
    return meta


def soul_variables(vault: Path) -> dict[str, Any]:
    """The dynamic variables soul.md declares (every frontmatter key but the greetings)."""
    meta = frontmatter(vault / "soul.md")
    return {k: v for k, v in meta.items() if k not in {"first_message", "first_message_returning"}}


def assert_valid_answer(answer: Any, soul_vars: Iterable[str]) -> dict[str, Any]:
    """Check the flat personalize answer of SPEC §6; returns its dynamic variables."""
    assert isinstance(answer, dict)
    assert answer["type"] == "conversation_initiation_client_data"
    allowed = {"type", "dynamic_variables", "conversation_config_override", "custom_llm_extra_body", "user_id"}
    assert set(answer) <= allowed, answer.keys()
    if "user_id" in answer:  # the caller key (SPEC §13): 64 hex digits, never a number
        assert isinstance(answer["user_id"], str) and len(answer["user_id"]) == 64, answer["user_id"]
        int(answer["user_id"], 16)
    variables = answer["dynamic_variables"]
    assert isinstance(variables, dict)
    for name, value in variables.items():
        assert value is not None, name
        assert type(value) in (str, int, float, bool), (name, value)
        assert not name.startswith("system__"), name
    missing = {*BUILTIN_VARIABLES, *soul_vars} - variables.keys()
    assert not missing, f"missing dynamic variables: {missing}"
    assert type(variables["caller_known"]) is bool
    assert type(variables["call_count"]) is int
    override = answer.get("conversation_config_override")
    if override is not None:
        assert isinstance(override, dict)
        _assert_no_nulls(override)
    if "custom_llm_extra_body" in answer:  # CUSTOM_LLM_EXTRA_BODY: an object, passed on to a custom LLM as it is
        extra = answer["custom_llm_extra_body"]
        assert isinstance(extra, dict) and set(extra) <= {"caller_known", "caller_key", "tenant"}, extra
        _assert_no_nulls(extra)
        assert type(extra["caller_known"]) is bool
        assert "caller_key" in extra or not extra["caller_known"], extra
        assert re.fullmatch("[0-9a-f]{64}", extra.get("caller_key", "0" * 64)), extra
    return variables


def _assert_no_nulls(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert item is not None, f"{key} is null"
            _assert_no_nulls(item)


def prompt_of(answer: dict[str, Any]) -> str:
    return answer["conversation_config_override"]["agent"]["prompt"]["prompt"]


def first_message_of(answer: dict[str, Any]) -> str:
    return answer["conversation_config_override"]["agent"]["first_message"]


def request(caller_id: str, called_number: str = "+14155550199", **extra: Any) -> dict[str, Any]:
    """A personalize request body as ElevenLabs sends it."""
    return {
        "caller_id": caller_id,
        "agent_id": "agent_7101k5zvyjhmfg983brhmhkd98n6",
        "called_number": called_number,
        "call_sid": "CA" + os.urandom(16).hex(),
        **extra,
    }


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, what: str = "") -> Any:
    """Poll until `predicate` returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def known_file(server: LiveServer, number: str) -> str | None:
    """The vault file the server holds for a caller, via the API (no side effects), or None."""
    response = server.admin("GET", f"/api/callers/{key_for(number)}")
    return response.json()["file"] if response.status_code == 200 else None


def commits(vault: Path, since: str | None = None) -> list[dict[str, Any]]:
    """The vault's history (after commit `since`), newest first: sha, full message and the files each touched."""
    out = git(vault, "log", "--format=%x1e%H%x1f%B%x1f", "--name-only", *([f"{since}..HEAD"] if since else []))
    result = []
    for chunk in out.split("\x1e")[1:]:
        sha, message, files = chunk.split("\x1f")
        result.append({"sha": sha, "message": message.strip(), "files": [f for f in files.split("\n") if f]})
    return result


def source_of(message: str) -> str:
    """The `Source:` trailer, which must be the message's last line."""
    last = message.strip().splitlines()[-1]
    assert last.startswith("Source: "), message
    source = last.removeprefix("Source: ")
    assert source in SOURCES, message
    return source


def caller_files_but(vault: Path, *left_out: str) -> dict[str, bytes]:
    """The bytes of every caller file (vault-relative path) but those named: what else a test's writes touched."""
    return {
        path.relative_to(vault).as_posix(): path.read_bytes()
        for path in (vault / "callers").rglob("*.md")
        if path.relative_to(vault).as_posix() not in left_out
    }


def vault_files(vault: Path) -> list[Path]:
    """Every file in a vault outside .git."""
    return [p for p in vault.rglob("*") if p.is_file() and ".git" not in p.relative_to(vault).parts[:1]]


def preview(server: LiveServer, number: str) -> dict[str, Any] | None:
    """What the personalize webhook would answer for a known caller now (no side effects), or None."""
    response = server.admin("GET", f"/api/callers/{key_for(number)}/preview")
    return response.json() if response.status_code == 200 else None
