"""The `memory-bridge` command line (SPEC §8), run as a subprocess on real vaults, alone and beside a
running server that must see its writes through the watcher. `import-seed` is in test_seed.py."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.phone import caller_key
from tests.conftest import (
    AGENT_NUMBER,
    MARIA,
    OTHER,
    LiveServer,
    base_env,
    caught_up,
    commits_since,
    elevenlabs_signature,
    fixture_json,
    git,
    run_cli,
    vault_head,
    vault_snapshot,
)
from tests.live_helpers import MARIA_KEY, OTHER_KEY, key_for

MARIA_FILE = f"callers/{MARIA_KEY[:12]}.md"
COMMANDS = ["serve", "note", "remember", "show", "preview", "hash", "import-seed", "doctor"]
COMMANDS += ["init", "upgrade-vault", "list", "search"]


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result, words: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result.stdout
    assert words in result.stderr
    assert result.stdout == ""


def section(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"## {name}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return [line for line in lines[start:end] if line.strip()]


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    """A vault made by the CLI itself, with its first commit."""
    path = tmp_path / "vault"
    assert ok(run_cli(path, "init")) == f"created a vault at {path}\n"
    ok(run_cli(path, "note", "Vault created", "--date", "2000-01-01"))
    return path


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(tmp_path: Path, command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    out = ok(run_cli(tmp_path / "vault", *args))
    assert out.startswith(f"usage: memory-bridge {command or ''}".rstrip())
    if command is None:
        for name in COMMANDS:
            assert f"    {name} " in out
    assert not (tmp_path / "vault").exists()  # --help touches nothing


def test_hash_prints_the_keyed_caller_key(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    assert ok(run_cli(vault, "hash", MARIA)) == MARIA_KEY + "\n"
    assert ok(run_cli(vault, "hash", "+1 (415) 555-0123")) == MARIA_KEY + "\n"
    assert ok(run_cli(vault, "hash", "(415) 555-0123", DEFAULT_REGION="US")) == MARIA_KEY + "\n"
    assert ok(run_cli(vault, "hash", "020 7183 8750", DEFAULT_REGION="GB")) == (key_for(OTHER) + "\n")
    other_key = ok(run_cli(vault, "hash", MARIA, PHONE_HASH_KEY="another-phone-hash-key")).strip()
    assert other_key == caller_key(MARIA, b"another-phone-hash-key") != MARIA_KEY
    for withheld in ("anonymous", "", "client:alice", "+266696687", "+1234"):
        refused(run_cli(vault, "hash", withheld), "not a usable phone number")


def test_note_appends_to_the_daily_note_a_dated_note_or_a_callers_notes(vault: Path) -> None:
    day = today()
    head = vault_head(vault)
    assert ok(run_cli(vault, "note", "Office closes at 3pm")) == f"saved to notes/{day}.md\n"
    assert (vault / f"notes/{day}.md").read_text() == f"# {day}\n\n- Office closes at 3pm\n"
    assert commits_since(vault, head) == [f"daily note for {day}\n\nSource: cli"]

    head = vault_head(vault)
    assert (
        ok(run_cli(vault, "note", "Closed for inventory", "--date", "2030-01-02")) == "saved to notes/2030-01-02.md\n"
    )
    assert (vault / "notes/2030-01-02.md").read_text() == "# 2030-01-02\n\n- Closed for inventory\n"
    assert commits_since(vault, head) == ["daily note for 2030-01-02\n\nSource: cli"]

    ok(run_cli(vault, "remember", MARIA, "Has a dog named Rex"))
    head = vault_head(vault)
    assert ok(run_cli(vault, "note", "Asked for a callback", "--caller", MARIA)) == f"saved to {MARIA_FILE}\n"
    assert ok(run_cli(vault, "note", "Bring documents", "--caller", MARIA_KEY, "--date", "2030-01-02")) == (
        f"saved to {MARIA_FILE}\n"
    )
    assert commits_since(vault, head) == [f"note for {MARIA_KEY[:12]}\n\nSource: cli"] * 2
    assert section((vault / MARIA_FILE).read_text(), "Notes") == [
        f"- {day}: Asked for a callback",
        "- 2030-01-02: Bring documents",
    ]

    files, head = vault_snapshot(vault), vault_head(vault)
    refused(run_cli(vault, "note", "x", "--caller", OTHER), "unknown caller")
    refused(run_cli(vault, "note", "x", "--caller", "ab" * 32), "unknown caller")
    refused(run_cli(vault, "note", "x", "--date", "20300102"), "date must be YYYY-MM-DD")
    refused(run_cli(vault, "note", "x", "--date", "2030-02-30"), "date must be YYYY-MM-DD")
    refused(run_cli(vault, "note", "  "), "the note is empty")
    assert vault_snapshot(vault) == files
    assert vault_head(vault) == head


def test_remember_adds_a_fact_and_show_prints_the_callers_memory(vault: Path) -> None:
    head = vault_head(vault)
    assert ok(run_cli(vault, "remember", MARIA, "Prefers morning appointments")) == f"saved to {MARIA_FILE}\n"
    assert ok(run_cli(vault, "remember", MARIA_KEY, "Has a dog named Rex")) == f"saved to {MARIA_FILE}\n"
    assert commits_since(vault, head) == [f"fact for {MARIA_KEY[:12]}\n\nSource: cli"] * 2
    text = (vault / MARIA_FILE).read_text()
    assert section(text, "Facts") == ["- Prefers morning appointments", "- Has a dog named Rex"]
    assert f'phone_hash: "{MARIA_KEY}"' in text and MARIA not in text

    files, head = vault_snapshot(vault), vault_head(vault)
    refused(run_cli(vault, "remember", "ab" * 32, "x"), "unknown caller")
    refused(run_cli(vault, "remember", "anonymous", "x"), "unknown caller")
    refused(run_cli(vault, "remember", AGENT_NUMBER, "x"), "unknown caller")  # our own number is nobody
    refused(run_cli(vault, "remember", MARIA, " "), "the fact is empty")
    refused(run_cli(vault, "remember", MARIA, "x" * 501), "longer than 500")
    assert vault_snapshot(vault) == files
    assert vault_head(vault) == head

    expected = {
        "phone_hash": MARIA_KEY,
        "file": MARIA_FILE,
        "frontmatter": {
            "phone_hash": MARIA_KEY,
            "name": "",
            "aliases": [],
            "call_count": 0,
            "first_call": "",
            "last_call": "",
        },
        "facts": ["Prefers morning appointments", "Has a dog named Rex"],
        "calls": [],
        "notes": [],
    }
    for caller in (MARIA, MARIA_KEY, "+1 415 555 0123"):
        assert json.loads(ok(run_cli(vault, "show", "--json", caller))) == expected
    refused(run_cli(vault, "show", "--json", OTHER), "unknown caller")
    refused(run_cli(vault, "preview", "--json", OTHER), "unknown caller")
    assert vault_snapshot(vault) == files
    assert vault_head(vault) == head


def test_preview_and_show_equal_the_http_answers_for_the_same_vault(server: LiveServer) -> None:
    start = vault_head(server.vault)
    server.personalize(fixture_json("personalize_request.json"))
    assert server.wait_for(lambda: len(commits_since(server.vault, start)) == 1)
    assert server.wait_for(lambda: caught_up(server))
    server.admin("POST", "/api/memory/%2B14155550123", json={"fact": "Prefers {{morning}} appointments"})
    server.admin("POST", "/api/notes", json={"note": "Office closes at 3pm"})
    body = json.dumps(fixture_json("post_call_transcription.json")).encode()
    signed = server.client.post(
        "/webhook/post-call", content=body, headers={"ElevenLabs-Signature": elevenlabs_signature(body)}
    )
    assert signed.status_code == 200
    assert server.wait_for(lambda: caught_up(server))  # the held event applied
    head = vault_head(server.vault)

    http_preview = server.admin("GET", f"/api/callers/{MARIA_KEY}/preview")
    cli_preview = ok(run_cli(server.vault, "preview", "--json", MARIA))
    webhook = server.personalize(fixture_json("personalize_request.json"))

    assert http_preview.status_code == 200
    assert cli_preview == http_preview.text + "\n"
    assert cli_preview == webhook.text + "\n"
    assert json.loads(cli_preview)["dynamic_variables"]["last_call_summary"] == (
        "Maria asked the agent to remember a penicillin allergy."
    )
    assert server.wait_for(lambda: len(commits_since(server.vault, head)) == 1)  # the call, counted
    assert server.wait_for(lambda: caught_up(server))  # and in the index, which the API reads
    shown = json.loads(ok(run_cli(server.vault, "show", "--json", MARIA)))
    assert shown == server.admin("GET", f"/api/callers/{MARIA_KEY}").json()

    # An unknown caller: `--new` shows the new-caller answer, with the caller's key as user_id; a
    # withheld caller's differs only in having none.
    new = ok(run_cli(server.vault, "preview", "--json", "--new", OTHER))
    assert new == server.personalize({"caller_id": OTHER, "called_number": AGENT_NUMBER}).text + "\n"
    assert json.loads(new)["dynamic_variables"]["caller_known"] is False
    assert json.loads(new)["user_id"] == OTHER_KEY
    withheld = server.personalize({"caller_id": "anonymous", "called_number": AGENT_NUMBER}).json()
    assert withheld == {k: v for k, v in json.loads(new).items() if k != "user_id"}


def test_a_running_server_sees_cli_writes_within_a_second(server_factory) -> None:  # type: ignore[no-untyped-def]
    # Nearer the default quiet period of 3 s: see the note on the race in test_api.py.
    server: LiveServer = server_factory(HAND_EDIT_QUIET_SECONDS="1")
    start = vault_head(server.vault)
    server.personalize(fixture_json("personalize_request.json"))
    assert server.wait_for(lambda: len(commits_since(server.vault, start)) == 1)
    assert server.wait_for(lambda: caught_up(server))

    def webhook_shows(line: str, variable: str) -> float:
        began = time.monotonic()
        seen = server.wait_for(
            lambda: (
                line in server.admin("GET", f"/api/callers/{MARIA_KEY}/preview").json()["dynamic_variables"][variable]
            ),
            timeout=1.0,
        )
        elapsed = time.monotonic() - began
        assert seen, f"{line!r} did not reach the server within one second"
        answer = server.personalize(fixture_json("personalize_request.json")).json()
        assert line in answer["dynamic_variables"][variable].splitlines()
        return elapsed

    head = vault_head(server.vault)
    ok(run_cli(server.vault, "remember", MARIA, "Likes jazz"))
    assert webhook_shows("- Fact: Likes jazz", "caller_memory") <= 1.0
    assert commits_since(server.vault, head)[0] == f"fact for {MARIA_KEY[:12]}\n\nSource: cli"

    ok(run_cli(server.vault, "note", "Phones are busy today"))
    assert webhook_shows("- Phones are busy today", "daily_notes") <= 1.0


def test_doctor_passes_a_healthy_vault_and_says_what_to_fix_in_a_broken_one(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    out = ok(run_cli(vault, "doctor"))  # no vault yet: reported, not created
    assert "does not exist yet" in out and out.endswith("all good\n")
    assert not vault.exists()

    ok(run_cli(vault, "init"))
    ok(run_cli(vault, "remember", MARIA, "Has a dog named Rex"))
    out = ok(run_cli(vault, "doctor"))
    lines = out.splitlines()
    assert lines[-1] == "all good"
    assert not any(line.lstrip().startswith("fix") for line in lines)
    assert "  ok  1 caller(s) indexed" in lines

    (vault / "callers/broken.md").write_text("---\nphone_hash: [unclosed\nname: Bob\n---\n# Bob\n")
    (vault / "callers/Maria.md").write_text("---\nname: Maria\n---\n# Maria\n")
    files, head = vault_snapshot(vault), vault_head(vault)
    result = run_cli(vault, "doctor")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    fixes = [line.strip() for line in lines if line.lstrip().startswith("fix")]
    assert len(fixes) == 2
    assert fixes[0].startswith("fix  callers/Maria.md ") and "no phone_hash" in fixes[0]
    assert fixes[1].startswith("fix  callers/broken.md ") and "not valid YAML" in fixes[1]
    assert lines[-1] == "2 thing(s) to fix"
    # The doctor only reads: nothing committed, nothing rewritten.
    assert vault_snapshot(vault) == files
    assert vault_head(vault) == head


def test_read_only_commands_create_and_commit_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    # `hash` needs only the key; without a vault the others say where to look, and create nothing.
    assert ok(run_cli(missing, "hash", MARIA)) == MARIA_KEY + "\n"
    refused(run_cli(missing, "show", "--json", MARIA), f"no vault at {missing}")
    refused(run_cli(missing, "preview", "--json", "--new", MARIA), f"no vault at {missing}")
    refused(run_cli(missing, "hash", MARIA, PHONE_HASH_KEY=""), "no PHONE_HASH_KEY is set")
    assert not missing.exists()

    vault = tmp_path / "vault"
    ok(run_cli(vault, "init"))
    ok(run_cli(vault, "remember", MARIA, "Has a dog named Rex"))
    (vault / "callers" / "by-hand.md").write_text("---\nphone_hash: " + "c" * 64 + "\n---\n# By hand\n")
    files, head = vault_snapshot(vault), vault_head(vault)
    status = git(vault, "status", "--porcelain")
    assert status == "?? callers/by-hand.md\n"
    assert json.loads(ok(run_cli(vault, "show", "--json", MARIA)))["facts"] == ["Has a dog named Rex"]
    assert json.loads(ok(run_cli(vault, "show", "--json", "c" * 64)))["file"] == "callers/by-hand.md"
    assert json.loads(ok(run_cli(vault, "preview", "--json", MARIA)))["dynamic_variables"]["caller_known"] is True
    refused(run_cli(vault, "hash", MARIA, PHONE_HASH_KEY=""), "holds no key of its own")  # and makes none
    assert (vault_snapshot(vault), vault_head(vault), git(vault, "status", "--porcelain")) == (files, head, status)


def test_the_cli_does_not_import_the_web_app(vault: Path) -> None:
    ok(run_cli(vault, "remember", MARIA, "Has a dog named Rex"))
    probe = (
        "import sys; from server import cli; "
        f"code = cli.main(['--env-file', '/dev/null', '--vault', {str(vault)!r}, 'preview', {MARIA!r}]); "
        "loaded = sorted(m for m in sys.modules if m == 'server.app' or m.startswith(('litestar', 'server.routes'))); "
        "print(code, loaded)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, **base_env(vault)}, capture_output=True, text=True
    )
    assert result.stdout.splitlines()[-1] == "0 []", result.stderr


def test_a_git_failure_is_one_clear_line_and_a_non_zero_exit(vault: Path) -> None:
    lock = vault / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("")
    try:
        result = run_cli(vault, "note", "Closed on Friday")
    finally:
        lock.unlink()
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("memory-bridge: git ") and "Traceback" not in result.stderr


@pytest.mark.slow(seconds=5)
def test_cli_writes_beside_a_running_server_never_race_its_commits(server: LiveServer) -> None:
    # The CLI and the server commit to one vault: one writer at a time, across processes.
    notes = [f"Note number {n}" for n in range(12)]
    facts = [f"Fact number {n}" for n in range(60)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        cli = [pool.submit(run_cli, server.vault, "note", note) for note in notes]
        api = [pool.submit(server.admin, "POST", f"/api/memory/{MARIA}", json={"fact": fact}) for fact in facts]
        results = [future.result() for future in cli]
        answers = [future.result() for future in api]
    assert [(r.returncode, r.stderr) for r in results] == [(0, "")] * len(notes)
    assert [a.status_code for a in answers] == [200] * len(facts)
    assert server.wait_for(lambda: git(server.vault, "status", "--porcelain") == "", timeout=10)
    history = git(server.vault, "log", "-p")
    for line in (*notes, *facts):
        assert history.count(f"+- {line}\n") == 1, line
    git(server.vault, "fsck", "--no-progress")
