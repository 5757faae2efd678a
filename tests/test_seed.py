"""`memory-bridge import-seed` (SPEC §8, §7): the predecessor's `data/` directory, 1,000 callers strong,
imported by the real CLI into a real vault, then served by the real server, which upgrades an imported
caller's plain SHA-256 hash to the keyed one on their next call."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from server.gitcommit import MAX_LISTED
from server.importer import CHUNK
from tests.conftest import (
    ADMIN_KEY,
    AGENT_NUMBER,
    FIXTURES,
    argument_bytes,
    caught_up,
    commits_since,
    elevenlabs_signature,
    git,
    run_cli,
    vault_head,
    vault_snapshot,
)
from tests.live_helpers import key_for

CALLERS = 1000
BASE = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAILY = [(BASE + 10, "Office closed on Thursday"), (BASE + 20, "New parking rules"), (BASE + 90_000, "Flu shots")]


def number(i: int) -> str:
    return f"+1415555{1000 + i:04d}"


def legacy(e164: str) -> str:
    """The predecessor's phone hash: plain SHA-256 of the E.164 number."""
    return hashlib.sha256(e164.encode()).hexdigest()


def day(timestamp: float) -> dt.date:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date()


def expected(i: int) -> dict:
    """What the predecessor knew about caller i, and so what their file must hold."""
    name = f"Caller {i:04d}" if i % 4 else ""
    first = BASE + i * 3600
    return {
        "phone_hash": legacy(number(i)),
        "name": name,
        "call_count": i % 9 + 1,
        "first": first,
        "last": first + (i % 30) * 86_400,
        "facts": [f"Fact {i} about the dog", f"Fact {i} about the car"] if i % 7 else [],
        "notes": [(BASE + 500 + i, f"Call back about order {i}")] if i % 10 == 2 else [],
    }


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The predecessor's data directory, written as its memory.py wrote it (json.dumps, indent=2)."""
    data = tmp_path_factory.mktemp("predecessor") / "data"
    data.mkdir()
    sessions, memories, notes = {}, {}, []
    for i in range(CALLERS):
        c = expected(i)
        h = c["phone_hash"]
        sessions[h] = {
            "session_id": f"{h[:12]}_{int(c['first'])}",
            "phone_hash": h,
            "caller_name": c["name"],
            "call_count": c["call_count"],
            "first_seen": c["first"],
            "last_seen": c["last"],
            "last_call_sid": f"CA{i:032x}",
            "active": False,
        }
        if c["facts"]:
            memories[h] = {"phone_hash": h, "facts": c["facts"]}
        notes += [{"timestamp": t, "note": text, "phone_hash": h} for t, text in c["notes"]]
    notes += [{"timestamp": t, "note": text, "phone_hash": None} for t, text in DAILY]
    # Two entries no vault can take: a key that is not a hash, and a note for a caller it never had.
    sessions["not-a-hash"] = {"phone_hash": "not-a-hash", "caller_name": "Ghost", "call_count": 1}
    notes.append({"timestamp": BASE, "note": "orphan", "phone_hash": legacy("+14155559999")})
    for name, content in (("sessions.json", sessions), ("memories.json", memories), ("notes.json", notes)):
        (data / name).write_text(json.dumps(content, indent=2))
    return data


def frontmatter_and_sections(text: str) -> tuple[dict, dict[str, list[str]]]:
    assert text.startswith("---\n")
    block, body = text[4:].split("\n---\n", 1)
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:], [])
        elif line.startswith("#"):
            current = None
        elif current is not None and line.strip():
            current.append(line)
    return yaml.safe_load(block), sections


def import_seed(vault: Path, seed_dir: Path):  # type: ignore[no-untyped-def]
    if not vault.exists():
        assert run_cli(vault, "init").returncode == 0
    return run_cli(vault, "import-seed", str(seed_dir))


def test_import_seed_creates_every_caller_in_one_commit_and_a_rerun_changes_nothing(
    tmp_path: Path, seed_dir: Path
) -> None:
    vault = tmp_path / "vault"
    total = CALLERS + 2  # files: every caller, and two days of daily notes

    first = import_seed(vault, seed_dir)

    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"imported {CALLERS} caller(s) and 3 daily note(s); {total} file(s) changed, 2 entr(y/ies) skipped\n"
    )
    # A progress bar on stderr, ending full.
    bars = [line.strip("\r") for line in first.stderr.splitlines() if "importing [" in line]
    assert len(bars) >= 2
    assert bars[-1] == f"importing [{'#' * 30}] {total}/{total}"

    # One commit after the vault's first, by the CLI, listing the first changes and counting the rest.
    log = git(vault, "log", "--format=%s").splitlines()
    assert log == [f"{total} changes", "create the vault"]
    message = git(vault, "log", "-1", "--format=%B").strip()
    assert message.endswith(f"\n- ... and {total - MAX_LISTED} more\n\nSource: cli")
    listed = [line[2:] for line in message.splitlines() if line.startswith("- ")][:-1]
    assert len(listed) == MAX_LISTED
    assert set(listed) <= {f"import caller {legacy(number(i))[:12]}" for i in range(CALLERS)}
    assert git(vault, "status", "--porcelain") == ""

    callers = sorted((vault / "callers").glob("*.md"))
    assert len(callers) == CALLERS
    for i in range(CALLERS):
        c = expected(i)
        text = (vault / f"callers/{c['phone_hash'][:12]}.md").read_text()
        meta, sections = frontmatter_and_sections(text)
        assert meta == {
            "phone_hash": c["phone_hash"],
            "name": c["name"],
            "aliases": [c["name"]] if c["name"] else [],
            "call_count": c["call_count"],
            "first_call": day(c["first"]),
            "last_call": day(c["last"]),
        }, i
        assert sections.get("Facts", []) == [f"- {fact}" for fact in c["facts"]], i
        assert sections.get("Notes", []) == [f"- {day(t)}: {note}" for t, note in c["notes"]], i
        assert sections.get("Calls", []) == [], i
        assert number(i) not in text and number(i)[1:] not in text
    assert (vault / f"notes/{day(BASE)}.md").read_text() == (
        f"# {day(BASE)}\n\n- Office closed on Thursday\n- New parking rules\n"
    )
    assert (vault / f"notes/{day(BASE + 90_000)}.md").read_text() == f"# {day(BASE + 90_000)}\n\n- Flu shots\n"

    # Again: nothing changes, nothing is committed.
    files, head = vault_snapshot(vault), vault_head(vault)
    second = import_seed(vault, seed_dir)
    assert second.returncode == 0, second.stderr
    assert second.stdout == (
        f"imported {CALLERS} caller(s) and 3 daily note(s); 0 file(s) changed, 2 entr(y/ies) skipped\n"
    )
    assert vault_head(vault) == head
    assert vault_snapshot(vault) == files


@pytest.mark.slow(seconds=5)
def test_an_imported_caller_is_recognised_and_upgraded_to_the_keyed_hash(
    tmp_path: Path, seed_dir: Path, server_factory
) -> None:  # type: ignore[no-untyped-def]
    vault = tmp_path / "vault"
    assert import_seed(vault, seed_dir).returncode == 0
    i = 62  # named, with facts and a note
    c, e164 = expected(i), number(i)
    old, new = c["phone_hash"], key_for(e164)
    path = vault / f"callers/{old[:12]}.md"
    server = server_factory(vault)
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}

    # The predecessor's admin calls, with its hash, keep working on an imported caller.
    assert server.client.get(f"/api/callers/{old}", headers=auth).json()["frontmatter"]["name"] == c["name"]
    response = server.client.post("/api/notes", json={"note": "Imported fine", "phone_hash": old}, headers=auth)
    assert response.status_code == 200
    # The caller's name is known: the note's write gives the file that name (SPEC §14).
    path = vault / f"callers/{c['name']}.md"
    assert response.json() == {"status": "saved", "file": f"callers/{c['name']}.md"}

    head = vault_head(server.vault)
    request = {"caller_id": e164, "agent_id": "agent_x", "called_number": AGENT_NUMBER, "call_sid": "CA" + "4" * 32}
    answer = server.personalize(request).json()

    variables = answer["dynamic_variables"]
    assert variables["caller_known"] is True
    assert variables["caller_name"] == c["name"]
    assert variables["call_count"] == c["call_count"]
    prompt = answer["conversation_config_override"]["agent"]["prompt"]["prompt"]
    for fact in c["facts"]:
        assert f"- Fact: {fact}" in prompt.splitlines()
    assert f"- Note: {day(c['notes'][0][0])}: Call back about order {i}" in prompt.splitlines()

    # Once the call is recorded the file carries the keyed hash; the plain SHA-256 is gone from it.
    assert server.wait_for(lambda: len(commits_since(server.vault, head)) == 1)
    assert server.wait_for(lambda: caught_up(server))  # and in the index, which the next calls read
    assert commits_since(server.vault, head) == [f"call from {new[:12]}\n\nSource: webhook"]
    text = path.read_text()
    meta, _ = frontmatter_and_sections(text)
    assert meta["phone_hash"] == new
    assert meta["call_count"] == c["call_count"] + 1
    assert meta["last_call"] == dt.datetime.now(dt.UTC).date()
    assert old not in text
    assert e164 not in text and e164[1:] not in text
    assert len(list((vault / "callers").glob("*.md"))) == CALLERS  # the same file, not a new one

    # Later calls find them by the keyed hash, also after a restart; the legacy alias is gone.
    for restart in (False, True):
        if restart:
            server.stop()
            server.start()
        again = server.personalize(request).json()["dynamic_variables"]
        assert again["caller_known"] is True
        assert again["caller_name"] == c["name"]
        assert f"Fact {i} about the dog" in again["caller_memory"]
        assert server.client.get(f"/api/callers/{new}", headers=auth).status_code == 200
        assert server.client.get(f"/api/callers/{old}", headers=auth).status_code == 404
    # Both later calls were counted in the same file.
    count = c["call_count"] + 3
    assert server.wait_for(lambda: frontmatter_and_sections(path.read_text())[0]["call_count"] == count)

    # A post-call webhook for another imported caller finds them by the plain hash and upgrades them too.
    j = 63
    event = json.loads((FIXTURES / "post_call_transcription.json").read_text())
    event["data"]["metadata"]["phone_call"]["external_number"] = number(j)
    del event["data"]["conversation_initiation_client_data"]
    body = json.dumps(event).encode()
    response = server.client.post(
        "/webhook/post-call", content=body, headers={"ElevenLabs-Signature": elevenlabs_signature(body)}
    )
    keyed = key_for(number(j))
    assert response.json() == {"status": "held", "caller": keyed[:12]}
    # Applied in the background; its file took its name, if the predecessor knew one (SPEC §14).
    assert server.wait_for(lambda: caught_up(server), timeout=10), "the held event was not applied"
    other = (vault / server.client.get(f"/api/callers/{keyed}", headers=auth).json()["file"]).read_text()
    assert frontmatter_and_sections(other)[0]["phone_hash"] == keyed
    summary = "Maria asked the agent to remember a penicillin allergy."
    assert frontmatter_and_sections(other)[1]["Calls"] == [
        f"- 2025-11-29 22:59 · {summary} ({event['data']['conversation_id']})"
    ]
    assert expected(j)["phone_hash"] not in other
    assert len(list((vault / "callers").glob("*.md"))) == CALLERS

    # Importing again after the upgrades brings nothing back: no legacy duplicates, no commit.
    files, head = vault_snapshot(vault), vault_head(vault)
    rerun = import_seed(vault, seed_dir)
    assert rerun.returncode == 0, rerun.stderr
    assert "; 0 file(s) changed, 2 entr(y/ies) skipped\n" in rerun.stdout
    assert vault_snapshot(vault) == files
    assert vault_head(vault) == head


@pytest.mark.parametrize(
    ("files", "words"),
    [
        (None, "is not a directory"),
        ({}, "has none of sessions.json, memories.json, notes.json"),
        ({"memories.json": "{not json"}, "memories.json cannot be imported"),
        ({"sessions.json": '{"ab": {"call_count": "many"}}'}, "sessions.json cannot be imported"),
        ({"notes.json": '[{"note": "no timestamp"}]'}, "notes.json cannot be imported"),
    ],
    ids=["missing directory", "empty directory", "broken JSON", "wrong type", "missing field"],
)
def test_a_bad_data_directory_is_refused_and_nothing_is_written(
    tmp_path: Path, files: dict[str, str] | None, words: str
) -> None:
    data = tmp_path / "data"
    if files is not None:
        data.mkdir()
        for name, content in files.items():
            (data / name).write_text(content)
    vault = tmp_path / "vault"
    result = run_cli(vault, "import-seed", str(data))
    assert result.returncode == 1
    assert words in result.stderr
    assert result.stdout == ""
    assert not vault.exists()


# Under a lowered stack limit (`small_argument_room`) each of the import's commands would overflow on
# its own with this many callers: their paths alone, and the commit message alone, if either were
# given to git on its command line. (On a default machine it took 20,000 for the message, whose one
# argument may not pass 128 KiB, and more for the paths.)
BIG_IMPORT = 5_000


@pytest.mark.slow(seconds=5)
def test_a_big_import_is_committed_in_full(tmp_path: Path, small_argument_room: int) -> None:
    # A big predecessor: every imported file is committed by the import itself (none left for the
    # next start to commit as hand edits), and the commit message stays bounded.
    data = tmp_path / "data"
    data.mkdir()
    hashes = [legacy(f"+1415{n:07d}") for n in range(BIG_IMPORT)]
    paths = [f"callers/{h[:12]}.md" for h in hashes]
    assert argument_bytes(paths) > small_argument_room, "the paths would fit on one command line"
    assert argument_bytes([f"- import caller {h[:12]}" for h in hashes]) > small_argument_room
    sessions = {h: {"phone_hash": h, "caller_name": "", "call_count": 2, "first_seen": BASE} for h in hashes}
    (data / "sessions.json").write_text(json.dumps(sessions))
    (data / "memories.json").write_text(json.dumps({h: {"phone_hash": h, "facts": ["Likes tea"]} for h in hashes}))
    (data / "notes.json").write_text("[]")
    vault = tmp_path / "vault"

    result = import_seed(vault, data)

    assert result.returncode == 0, result.stderr
    assert f"imported {BIG_IMPORT} caller(s)" in result.stdout
    assert git(vault, "status", "--porcelain", "--untracked-files=all") == ""
    assert set(git(vault, "ls-files", "callers").split()) - {"callers/.gitkeep"} == set(paths)
    # A commit per chunk of callers, each message bounded.
    log = git(vault, "log", "--format=%B%x1e", "HEAD~3..HEAD")
    bodies = [body.strip() for body in log.split("\x1e") if body.strip()]
    sizes = [CHUNK, CHUNK, BIG_IMPORT - 2 * CHUNK][::-1]
    for body, size in zip(bodies, sizes, strict=True):
        assert body.startswith(f"{size} changes\n\n- import caller ")
        assert body.endswith(f"\n- ... and {size - MAX_LISTED} more\n\nSource: cli")
    assert git(vault, "log", "--format=%s", "HEAD~3").strip().splitlines() == ["create the vault"]
