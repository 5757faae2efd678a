"""`memory-bridge backfill` against a local stand-in of ElevenLabs' conversations API (SPEC §13).

The CLI runs for real on a real vault with real git; only ElevenLabs is a stand-in on loopback,
serving the documented paths and shapes (`tests/elevenlabs_standin.py`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.conftest import fixture_json, git, run_cli, vault_head
from tests.elevenlabs_standin import API_KEY, StandIn, standin_api
from tests.live_helpers import key_for

BASE_TIME = 1764457163  # 2025-11-29 22:59:23 UTC


def conversation(n: int, number: str | None, *, status: str = "done") -> dict:
    """A phone conversation as the API's details answer it (the transcription event's `data`)."""
    data = copy.deepcopy(fixture_json("post_call_transcription.json")["data"])
    data["conversation_id"] = f"conv_backfill_{n:05d}"
    data["status"] = status
    data["metadata"]["start_time_unix_secs"] = BASE_TIME + n * 60
    data["analysis"]["transcript_summary"] = f"Backfilled call number {n}."
    variables = data["conversation_initiation_client_data"]["dynamic_variables"]
    if number is None:
        data["metadata"]["phone_call"] = None  # a web conversation: no caller to remember
        variables.pop("system__caller_id", None)
        variables.pop("system__call_sid", None)
    else:
        data["metadata"]["phone_call"]["external_number"] = number
        variables["system__caller_id"] = number
    return data


def numbers(count: int) -> list[str]:
    return [f"+1212555{7000 + i:04d}" for i in range(count)]


def backfill(vault: Path, standin: StandIn, *args: str):  # type: ignore[no-untyped-def]
    return run_cli(vault, "backfill", *args, ELEVENLABS_API_KEY=API_KEY, ELEVENLABS_API_URL=standin.url)


def calls_in(vault: Path) -> list[str]:
    """Every `## Calls` line of every caller file."""
    return [
        line
        for path in sorted((vault / "callers").glob("*.md"))
        for line in path.read_text().splitlines()
        if line.startswith("- ") and "(conv_" in line
    ]


def file_with(vault: Path, key: str) -> Path:
    """The caller file that holds `key`, whatever its name."""
    return next(p for p in (vault / "callers").glob("*.md") if key in p.read_text().split("\n---", 1)[0])


@pytest.mark.slow(seconds=8)
def test_a_thousand_conversations_backfilled_twice_are_each_written_once(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    callers = numbers(50)
    with standin_api() as standin:
        for n in range(1000):
            standin.add(conversation(n, callers[n % len(callers)]))
        standin.add(conversation(1000, None))  # a web conversation
        standin.add(conversation(1001, callers[0], status="in-progress"))  # no summary yet
        assert run_cli(vault, "init").returncode == 0
        start = vault_head(vault)

        first = backfill(vault, standin)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == (
            "1002 conversation(s) listed, 0 already recorded, 1000 written, 0 duplicate(s), "
            "2 without a caller, 0 failed"
        )
        assert "backfill: 100 conversation(s) listed" in first.stderr  # progress, page by page
        assert "backfill: 1002 conversation(s) listed, 0 already recorded, 100 written" in first.stderr
        lines = calls_in(vault)
        assert len(lines) == 1000
        for n in range(1000):
            assert sum(line.endswith(f"(conv_backfill_{n:05d})") for line in lines) == 1
            assert f"Backfilled call number {n}. (conv_backfill_{n:05d})" in "\n".join(lines)
        # Each caller's calls in the order they happened, in the caller's own file.
        for i, number in enumerate(callers):
            path = file_with(vault, key_for(number))  # named after the caller once known (SPEC §14)
            own = [line for line in path.read_text().splitlines() if "(conv_backfill_" in line]
            assert own == [f"- {line}" for line in _expected_lines(range(i, 1000, len(callers)))]
        history = git(vault, "log", "--format=%B", f"{start}..HEAD")
        assert "Source: webhook" in history
        assert all(number[1:] not in history for number in callers)
        head = vault_head(vault)
        details_fetched = standin.detail_requests

        second = backfill(vault, standin)
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == (
            "1002 conversation(s) listed, 1000 already recorded, 0 written, 0 duplicate(s), "
            "2 without a caller, 0 failed"
        )
        assert standin.detail_requests == details_fetched + 1  # only the web conversation is fetched again
        assert vault_head(vault) == head
        assert calls_in(vault) == lines


def _expected_lines(ns: range) -> list[str]:
    import datetime as dt

    out = []
    for n in ns:
        when = dt.datetime.fromtimestamp(BASE_TIME + n * 60, dt.UTC)
        out.append(f"{when:%Y-%m-%d %H:%M} · Backfilled call number {n}. (conv_backfill_{n:05d})")
    return out


def test_since_and_agent_narrow_the_run_and_a_wrong_key_changes_nothing(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    with standin_api() as standin:
        for n in range(5):
            standin.add(conversation(n, "+12125557999"))
        other = conversation(5, "+12125557999")
        other["agent_id"] = "agent_other"
        standin.add(other)
        assert run_cli(vault, "init").returncode == 0
        head = vault_head(vault)

        refused = run_cli(vault, "backfill", ELEVENLABS_API_KEY="xi-wrong-key-000", ELEVENLABS_API_URL=standin.url)
        assert refused.returncode == 1
        assert "ElevenLabs answered 401" in refused.stderr and "xi-wrong-key" not in refused.stderr
        assert vault_head(vault) == head

        # 2025-11-29 23:02 UTC is the start of conversation 3; the day boundary is TIMEZONE's (UTC).
        narrowed = backfill(vault, standin, "--since", "2025-11-30", "--agent", "agent_other")
        assert narrowed.returncode == 0, narrowed.stderr
        assert narrowed.stdout.startswith("0 conversation(s) listed")
        by_agent = backfill(vault, standin, "--agent", "agent_other")
        assert by_agent.stdout.startswith("1 conversation(s) listed, 0 already recorded, 1 written")
        assert [line.rsplit("(", 1)[1] for line in calls_in(vault)] == ["conv_backfill_00005)"]
        every = backfill(vault, standin)
        assert every.stdout.startswith("6 conversation(s) listed, 1 already recorded, 5 written")

        missing = run_cli(vault, "backfill")
        assert missing.returncode == 2 and "ELEVENLABS_API_KEY" in missing.stderr
