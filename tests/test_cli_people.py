"""The command line for the vault people open (SPEC §14): no implicit vault, `note --key`, `init`.

Each runs `memory-bridge` as a subprocess on a real vault with real git.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.conftest import MARIA, commits_since, run_cli, vault_head, vault_snapshot
from tests.live_helpers import MARIA_KEY

MARIA_FILE = f"callers/{MARIA_KEY[:12]}.md"


def ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr
    return result.stdout


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    assert ok(run_cli(path, "init")) == f"created a vault at {path}\n"
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("note", "Closed on Friday"),
        ("note", "x", "--key", "hours"),
        ("remember", MARIA, "Has a dog"),
        ("import-seed", "{seed}"),
    ],
)
def test_no_command_but_init_creates_a_vault(tmp_path: Path, args: tuple[str, ...]) -> None:
    seed = tmp_path / "data"
    seed.mkdir()
    (seed / "sessions.json").write_text("{}")
    missing = tmp_path / "home" / "vault"
    result = run_cli(missing, *(arg.format(seed=seed) for arg in args))
    assert result.returncode == 1
    assert result.stderr == (
        f"memory-bridge: no vault at {missing}: point VAULT_DIR (or --vault) at one, or run `memory-bridge init`\n"
    )
    assert not missing.exists() and not missing.parent.exists()


def test_init_creates_once_and_leaves_an_existing_vault_alone(vault: Path) -> None:
    files, head = vault_snapshot(vault), vault_head(vault)
    assert "soul.md" in files and ".gitignore" in files
    assert ok(run_cli(vault, "init")) == f"a vault is already at {vault}\n"
    assert (vault_snapshot(vault), vault_head(vault)) == (files, head)


def test_note_with_a_key_replaces_its_line_instead_of_adding_one(vault: Path) -> None:
    day = today()
    note = vault / "notes" / f"{day}.md"
    head = vault_head(vault)
    ok(run_cli(vault, "note", "Dr Smith is in today"))
    ok(run_cli(vault, "note", "The wait is 10 minutes", "--key", "wait"))
    ok(run_cli(vault, "note", "The wait is 40 minutes", "--key", "wait"))
    ok(run_cli(vault, "note", "Parking is free", "--key", "parking"))
    ok(run_cli(vault, "note", "The wait is 5 minutes", "--key", "wait"))
    assert note.read_text() == (
        f"# {day}\n\n- Dr Smith is in today\n- The wait is 5 minutes %%key: wait%%\n"
        "- Parking is free %%key: parking%%\n"
    )
    # The same note again changes nothing: no commit.
    ok(run_cli(vault, "note", "The wait is 5 minutes", "--key", "wait"))
    assert commits_since(vault, head) == [f"daily note for {day}\n\nSource: cli"] * 5
    # The key's mark is an Obsidian comment: the agent hears the note, never the key.
    preview = json.loads(ok(run_cli(vault, "preview", "--new", MARIA)))
    notes = preview["dynamic_variables"]["daily_notes"]
    assert "The wait is 5 minutes" in notes and "key" not in notes and "%%" not in notes

    ok(run_cli(vault, "remember", MARIA, "Has a dog"))
    ok(run_cli(vault, "note", "Owes 20 dollars", "--caller", MARIA, "--key", "balance"))
    ok(run_cli(vault, "note", "Owes nothing", "--caller", MARIA, "--key", "balance"))
    lines = (vault / MARIA_FILE).read_text().splitlines()
    assert lines[-1] == f"- {day}: Owes nothing %%key: balance%%"
    assert not any("Owes 20" in line for line in lines)

    files = vault_snapshot(vault)
    for bad in ("", "a b", "%%", "-x", "k" * 65):
        result = run_cli(vault, "note", "x", f"--key={bad}")
        assert result.returncode == 1 and "a note key is 1 to 64 letters" in result.stderr
    assert vault_snapshot(vault) == files


def test_doctor_tells_a_phone_hash_key_that_is_not_the_vaults(tmp_path: Path) -> None:
    # As the issue found it: the service generated its own key, then PHONE_HASH_KEY was set.
    vault = tmp_path / "vault"
    ok(run_cli(vault, "init", PHONE_HASH_KEY=""))
    ok(run_cli(vault, "remember", MARIA, "Has a dog", PHONE_HASH_KEY=""))
    generated = (vault / ".git/memory-bridge/phone-hash-key").read_text().strip()
    recorded = (vault / ".git/memory-bridge/phone-hash-key-fingerprint").read_text().strip()
    assert len(recorded) == 16 and recorded not in generated
    out = ok(run_cli(vault, "doctor", PHONE_HASH_KEY=""))
    assert "  ok  the phone-hash key is the one the vault's callers were keyed with\n" in out

    result = run_cli(vault, "doctor", PHONE_HASH_KEY="a-new-key-from-the-readme")
    assert result.returncode == 1
    fixes = [line.strip() for line in result.stdout.splitlines() if line.lstrip().startswith("fix")]
    assert fixes == [
        f"fix  PHONE_HASH_KEY is not the key this vault's callers were keyed with (its fingerprint is {recorded}), "
        "so every caller would be taken for a new one: set PHONE_HASH_KEY back to that key; the key the service "
        f"generated is in {vault}/.git/memory-bridge/phone-hash-key. To start over with the new key on purpose, "
        f"delete {vault}/.git/memory-bridge/phone-hash-key-fingerprint"
    ]
    assert generated not in result.stdout and "a-new-key-from-the-readme" not in result.stdout
    assert ok(run_cli(vault, "doctor", PHONE_HASH_KEY=generated)).endswith("all good\n")


def test_doctor_tells_a_changed_phone_hash_key(vault: Path) -> None:
    ok(run_cli(vault, "remember", MARIA, "Has a dog"))
    assert ok(run_cli(vault, "doctor")).endswith("all good\n")
    # A vault from before fingerprints is checked against its key file if it has one, else recorded at start.
    result = run_cli(vault, "doctor", PHONE_HASH_KEY="another-key")
    assert result.returncode == 1
    assert "PHONE_HASH_KEY is not the key this vault's callers were keyed with" in result.stdout
    assert "the key the service generated" not in result.stdout  # this vault never had one
    # The running service says so too, and records nothing over the vault's fingerprint.
    before = (vault / ".git/memory-bridge/phone-hash-key-fingerprint").read_bytes()
    ok(run_cli(vault, "note", "x", PHONE_HASH_KEY="another-key"))
    assert (vault / ".git/memory-bridge/phone-hash-key-fingerprint").read_bytes() == before
