"""The command line for the vault people open (SPEC §14): no implicit vault, `note --key`, `init`.

Each runs `memory-bridge` as a subprocess on a real vault with real git.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from server import edits
from tests.conftest import MARIA, commits_since, git, run_cli, vault_head, vault_snapshot
from tests.live_helpers import MARIA_KEY, key_for

MARIA_FILE = f"callers/{MARIA_KEY[:12]}.md"


def ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr
    return result.stdout


def named(name: str, text: str) -> str:
    """A caller file's text with its `name` property set, as a person would type it."""
    return edits.set_properties(text, {"name": name})


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
    preview = json.loads(ok(run_cli(vault, "preview", "--json", "--new", MARIA)))
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


def test_a_new_vault_ships_obsidian_daily_notes_and_the_callers_view(vault: Path) -> None:
    files = vault_snapshot(vault)
    assert json.loads(files[".obsidian/daily-notes.json"]) == {
        "folder": "notes",
        "format": "YYYY-MM-DD",
        "template": "templates/daily note",
    }
    assert files["templates/daily note.md"].startswith(b"# {{date:YYYY-MM-DD}}\n")
    base = yaml.safe_load(files["callers.base"])
    assert base["filters"] == {"and": ['file.inFolder("callers")', 'file.ext == "md"']}
    assert base["views"][0]["order"] == ["file.name", "note.name", "note.call_count", "note.last_call"]
    tracked = git(vault, "ls-files").split()
    assert ".obsidian/daily-notes.json" in tracked and "callers.base" in tracked
    # A person's own workspace stays theirs: never committed.
    (vault / ".obsidian/workspace.json").write_text("{}")
    (vault / ".obsidian/workspace-mobile.json").write_text("{}")
    assert git(vault, "status", "--porcelain", "--untracked-files=all") == ""
    # The template's title is the date, which the note's parse drops; its comment and private part never reach a call.
    day = today()
    template = files["templates/daily note.md"].decode().replace("{{date:YYYY-MM-DD}}", day)
    (vault / "notes" / f"{day}.md").write_text(template + "Mrs Jones: results\n")
    preview = json.loads(ok(run_cli(vault, "preview", "--json", "--new", MARIA)))
    assert preview["dynamic_variables"]["daily_notes"] == ""


def test_upgrade_vault_adds_what_an_old_vault_lacks_says_so_and_commits_it(vault: Path) -> None:
    # An old vault: none of the shipped files, an old .gitignore, and a person's own daily-note settings.
    for relpath in ("callers.base", "templates/daily note.md", ".obsidian/daily-notes.json"):
        (vault / relpath).unlink()
    (vault / ".gitignore").write_text("*.swp\n")
    git(vault, "add", "-A")
    git(vault, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "an old vault")
    head = vault_head(vault)
    out = ok(run_cli(vault, "upgrade-vault"))
    assert out.splitlines() == [
        "added .obsidian/daily-notes.json: Obsidian's daily notes go to notes/ as YYYY-MM-DD, from "
        "templates/daily note.md",
        "added templates/daily note.md: the daily-note template",
        "added callers.base: a table of the callers (name, calls, last call)",
        "added to .gitignore: .obsidian/workspace*.json, .obsidian/cache, .trash/ (a person's own workspace)",
    ]
    assert commits_since(vault, head) == [
        "4 changes\n\n- upgrade the vault: .obsidian/daily-notes.json\n- upgrade the vault: templates/daily note.md\n"
        "- upgrade the vault: callers.base\n- upgrade the vault: .gitignore\n\nSource: cli"
    ]
    assert (vault / ".gitignore").read_text().startswith("*.swp\n")
    assert git(vault, "status", "--porcelain") == ""
    # Run again: nothing to do, nothing committed.
    head = vault_head(vault)
    assert ok(run_cli(vault, "upgrade-vault")) == "the vault already has everything new vaults ship\n"
    assert vault_head(vault) == head
    # A person's own daily-note settings are kept, and what they change is said.
    (vault / ".obsidian/daily-notes.json").write_text('{"folder": "Journal", "format": "DD.MM.YYYY"}')
    out = ok(run_cli(vault, "upgrade-vault"))
    assert out.splitlines()[0] == (
        "kept .obsidian/daily-notes.json as it is: folder is 'Journal', format is 'DD.MM.YYYY'; the agent reads "
        "daily notes only from notes/ named YYYY-MM-DD"
    )
    assert (vault / ".obsidian/daily-notes.json").read_text() == '{"folder": "Journal", "format": "DD.MM.YYYY"}'
    refused = run_cli(vault.parent / "nowhere", "upgrade-vault")
    assert refused.returncode == 1 and "no vault at" in refused.stderr


def test_callers_are_named_by_number_key_short_key_or_name_and_shown_readably(vault: Path) -> None:
    other, third = "+442071838750", "+14155550188"
    ok(run_cli(vault, "remember", MARIA, "Prefers mornings"))
    ok(run_cli(vault, "remember", other, "Has a dog"))
    ok(run_cli(vault, "remember", third, "Likes jazz"))
    maria_file = vault / MARIA_FILE
    maria_file.write_text(named("Maria Lopez", maria_file.read_text()))
    other_key = key_for(other)
    other_file = vault / f"callers/{other_key[:12]}.md"
    other_file.write_text(named("Maria Lopez", other_file.read_text()))
    # The readable view.
    for name in (MARIA, "(415) 555-0123", MARIA_KEY, MARIA_KEY[:8].upper()):
        out = ok(run_cli(vault, "show", name, DEFAULT_REGION="US"))
        assert out.splitlines()[:2] == [f"Maria Lopez  ({MARIA_KEY[:12]}, {MARIA_FILE})", "0 call(s)"]
        assert out.endswith("\nFacts\n  - Prefers mornings\n")
    assert json.loads(ok(run_cli(vault, "show", "--json", MARIA_KEY[:10])))["facts"] == ["Prefers mornings"]
    # Two Marias: the name alone is not enough, and the person is told how to say which.
    result = run_cli(vault, "show", "maria lopez")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "2 callers answer to 'maria lopez'; name one by its key:",
        *sorted(
            [f"  {MARIA_KEY[:12]}  {MARIA_FILE}", f"  {other_key[:12]}  callers/{other_key[:12]}.md"],
            key=lambda line: line.split()[1],
        ),
    ]
    # A name names a caller for writes too.
    (vault / f"callers/{key_for(third)[:12]}.md").rename(vault / "callers/Jazz Fan.md")
    ok(run_cli(vault, "note", "Call back on Friday", "--caller", "jazz fan"))
    ok(run_cli(vault, "remember", "Jazz Fan", "Plays the sax"))
    shown = json.loads(ok(run_cli(vault, "show", "--json", "Jazz Fan")))
    assert shown["facts"] == ["Likes jazz", "Plays the sax"] and shown["notes"] == [f"- {today()}: Call back on Friday"]
    refused = run_cli(vault, "remember", "Nobody Known", "x")
    assert refused.returncode == 1 and refused.stderr == "unknown caller\n"
    # preview: readable by default, the exact webhook JSON with --json.
    readable = ok(run_cli(vault, "preview", "Jazz Fan"))
    assert readable.startswith("First message:\n") and "\nVariables:\n" in readable
    assert "\n  caller_known = True\n" in readable
    assert "\nPrompt:\n" in readable and "Plays the sax" in readable
    exact = json.loads(ok(run_cli(vault, "preview", "--json", "Jazz Fan")))
    assert exact["type"] == "conversation_initiation_client_data"


def test_list_and_search(vault: Path) -> None:
    ok(run_cli(vault, "remember", MARIA, "Has a dog named Rex"))
    ok(run_cli(vault, "remember", "+14155550188", "Likes jazz and dogs"))
    jazz = key_for("+14155550188")
    (vault / f"callers/{jazz[:12]}.md").rename(vault / "callers/Jazz Fan.md")
    out = ok(run_cli(vault, "list")).splitlines()
    assert MARIA_FILE.casefold() < "callers/jazz fan.md"  # listed by file name, any case
    assert out == [
        f"{MARIA_KEY[:12]}      0  -           Caller {MARIA_KEY[:12]}  ({MARIA_FILE})",
        f"{jazz[:12]}      0  -           Caller {jazz[:12]}  (callers/Jazz Fan.md)",
    ]
    assert ok(run_cli(vault, "search", "DOG")).count("\n") == 2
    assert ok(run_cli(vault, "search", "jazz", "dogs")).splitlines() == [
        f"{jazz[:12]}      0  -           Caller {jazz[:12]}  (callers/Jazz Fan.md)"
    ]
    assert ok(run_cli(vault, "search", "jazz fan")).count("\n") == 1  # the file name counts
    result = run_cli(vault, "search", "cats")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "no caller matches\n")
