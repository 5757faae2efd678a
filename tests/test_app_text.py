"""The service never writes what it cannot read back (SPEC §2, §5, §6): every writer, end to end over
the real server, the CLI and the import; the vault is then read again by a restarted server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from server.parse import MAX_FILE_BYTES
from server.text import MAX_SUMMARY_CHARS, TRIMMED
from tests.calls import CONV, MARIA_FILE, encode, payload
from tests.conftest import MARIA, LiveServer, fixture_json, run_cli, vault_head, vault_snapshot
from tests.live_helpers import MARIA_KEY, caller_md, preview
from tests.test_app_postcall import applied, deliver
from tests.test_app_tool import call_tool

HOSTILE = "\x00\x01\x1b\x7f\x85\x9f\u2028\u2029\u202e\u2066\ufeff"


def restarted(server: LiveServer) -> LiveServer:
    """The same server on the same vault after a restart: it reads everything from disk again."""
    server.stop()
    server.start()
    return server


def detail(response: httpx.Response) -> str:
    body = response.json()
    assert body["status_code"] == response.status_code
    return str(body["detail"])


def no_control_bytes(vault: Path) -> None:
    for relpath, data in vault_snapshot(vault).items():
        assert b"\x00" not in data and "\u2028".encode() not in data and b"\xc2\x85" not in data, relpath


def test_api_writes_are_normalised_refused_with_400_when_they_cannot_be_stored_and_read_back_after_a_restart(
    server: LiveServer,
) -> None:
    fact = f"Allergic{HOSTILE[0]} to{HOSTILE[6]}penicillin{HOSTILE[8]}"
    assert server.admin("POST", f"/api/memory/{MARIA}", json={"fact": fact}).status_code == 200
    note = {"note": f"Office\x00 closed{HOSTILE}today", "date": "2026-11-25"}
    assert server.admin("POST", "/api/notes", json=note).status_code == 200
    caller_note = {"note": "Call\x00back\u2028Friday", "phone_hash": MARIA_KEY, "date": "2026-11-25"}
    assert server.admin("POST", "/api/notes", json=caller_note).status_code == 200

    files, head = vault_snapshot(server.vault), vault_head(server.vault)
    refused = [
        (f"/api/memory/{MARIA}", {"fact": HOSTILE}, "the fact is empty"),
        (f"/api/memory/{MARIA}", {"fact": "x" * 501}, "the fact is longer than 500 characters"),
        (f"/api/memory/{MARIA}", {"fact": "\x00" * 600 + "x" * 501}, "the fact is longer than 500 characters"),
        ("/api/notes", {"note": HOSTILE}, "the note is empty"),
        ("/api/notes", {"note": "y" * 2001}, "the note is longer than 2000 characters"),
    ]
    for path, body, message in refused:
        response = server.admin("POST", path, json=body)
        assert (response.status_code, detail(response)) == (400, message)
    assert vault_snapshot(server.vault) == files and vault_head(server.vault) == head

    text = (server.vault / MARIA_FILE).read_text(encoding="utf-8")
    assert "\n- Allergic to penicillin\n" in text
    assert "\n- 2026-11-25: Callback Friday\n" in text
    assert (server.vault / "notes/2026-11-25.md").read_text(
        encoding="utf-8"
    ) == "# 2026-11-25\n\n- Office closed today\n"
    no_control_bytes(server.vault)

    restarted(server)
    caller = server.admin("GET", f"/api/callers/{MARIA_KEY}")
    assert caller.status_code == 200, "the caller is a stranger after a restart"
    assert caller.json()["facts"] == ["Allergic to penicillin"]
    assert caller.json()["notes"] == ["- 2026-11-25: Callback Friday"]
    assert server.admin("GET", "/health").json()["errors"] == {}


def test_the_tool_saves_a_fact_normalised_and_says_so_when_nothing_is_left(server: LiveServer) -> None:
    body = fixture_json("tool_remember_request.json")
    saved = call_tool(server, {**body, "fact": "Allergic\x00 to\u2028penicillin\u202e"}).json()
    assert saved == {"status": "saved", "message": "Got it, I've made a note of that."}
    head = vault_head(server.vault)
    empty = call_tool(server, {**body, "fact": HOSTILE}).json()
    assert empty == {"status": "not_saved", "message": "I didn't catch what to remember. Could you say it again?"}
    long = call_tool(server, {**body, "fact": "x" * 501}).json()
    too_long = "That's too long for me to save. Could you say it in one short sentence?"
    assert long == {"status": "not_saved", "message": too_long}
    assert vault_head(server.vault) == head
    assert "\n- Allergic to penicillin\n" in (server.vault / MARIA_FILE).read_text(encoding="utf-8")
    no_control_bytes(server.vault)


def test_a_huge_hostile_summary_is_trimmed_says_so_and_never_pushes_older_calls_out_of_the_prompt(
    server: LiveServer,
) -> None:
    older = payload({"data.conversation_id": "conv_older", "data.metadata.start_time_unix_secs": 1764370763})
    older["data"]["analysis"]["transcript_summary"] = "Booked a cleaning for Tuesday."
    older["data"]["analysis"]["data_collection_results"]["caller_name"]["value"] = "Ma\x00ria\u2028 Lopez\u202e"
    assert deliver(server, encode(older)).json()["status"] == "held"
    applied(server)
    huge = payload()
    huge["data"]["analysis"]["transcript_summary"] = "Talked\x00 at length\u2028about everything. " * 40_000  # 1.5 MB

    response = deliver(server, encode(huge))

    assert response.status_code == 200 and response.json()["status"] == "held"
    applied(server)
    # Named from the first call's (cleaned) name: the file took it (SPEC §14).
    text = (server.vault / "callers/Maria Lopez.md").read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.endswith(f"({CONV})"))
    assert line.startswith("- 2025-11-29 22:59 · Talked at length about everything. Talked at length")
    assert line.endswith(f"{TRIMMED} ({CONV})")
    assert len(line) <= MAX_SUMMARY_CHARS + len(f"- 2025-11-29 22:59 ·  ({CONV})")
    assert "\nname: Maria Lopez\n" in text
    no_control_bytes(server.vault)

    restarted(server)
    answer = preview(server, MARIA)
    assert answer is not None, "the caller is a stranger after a restart"
    variables = answer["dynamic_variables"]
    assert variables["caller_name"] == "Maria Lopez"
    assert "- Call 2025-11-28 22:59: Booked a cleaning for Tuesday." in variables["caller_memory"].splitlines()
    assert len(variables["last_call_summary"]) <= 500
    assert variables["last_call_summary"].startswith("Talked at length about everything.")
    assert variables["last_call_summary"].endswith("…")


def test_a_write_that_would_make_a_file_bigger_than_the_loader_reads_is_refused_everywhere(
    server: LiveServer,
) -> None:
    # A caller file and a daily note that a person filled up to just under the loader's limit: they
    # load, and any write that would push them over it (and lose them on the next restart) is refused.
    filler = "Kept by hand. " * 1000 + "\n"
    base = caller_md(MARIA, notes="")
    body = base + filler * ((MAX_FILE_BYTES - 300 - len(base)) // len(filler))
    body += "x" * (MAX_FILE_BYTES - 300 - len(body)) + "\n"
    (server.vault / "callers/maria.md").write_text(body, encoding="utf-8")
    (server.vault / "notes/2026-11-25.md").write_text("# 2026-11-25\n\n" + filler * 70, encoding="utf-8")
    assert server.wait_for(lambda: server.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 200)
    files = vault_snapshot(server.vault)

    response = server.admin("POST", f"/api/memory/{MARIA}", json={"fact": "f" * 400})
    assert response.status_code == 400 and "the caller's file is full" in detail(response)
    response = server.admin("POST", "/api/notes", json={"note": "n" * 2000, "date": "2026-11-25"})
    assert response.status_code == 400 and "notes/2026-11-25.md is full" in detail(response)
    tool = call_tool(server, {**fixture_json("tool_remember_request.json"), "fact": "f" * 400}).json()
    assert tool == {"status": "not_saved", "message": "I couldn't save that: there's no room left in my notes for you."}
    summary = payload()
    summary["data"]["analysis"]["transcript_summary"] = "s" * 3000
    response = deliver(server, encode(summary))
    # Held, then parked: the event waits in the inbox until a person makes room in the file.
    assert response.status_code == 200 and response.json()["status"] == "held"
    assert server.wait_for(lambda: server.client.get("/health").json()["inbox_parked"] == 1)

    assert vault_snapshot(server.vault) == files
    restarted(server)
    assert server.admin("GET", f"/api/callers/{MARIA_KEY}").status_code == 200
    assert server.admin("GET", "/health").json()["errors"] == {}


def test_the_cli_and_the_import_normalise_the_same_way(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    assert run_cli(vault, "init").returncode == 0
    # Arguments cannot carry NUL, but they can carry every other control character and bytes that
    # are not UTF-8 (which reach Python as lone surrogates and cannot be encoded back).
    remembered = run_cli(vault, "remember", MARIA, "Likes\x1b[31m tea\u2028with\x85milk \udcff")
    assert remembered.returncode == 0, remembered.stderr
    noted = run_cli(vault, "note", "--date", "2026-11-25", "Closed\u2029early\x07 \udcfe")
    assert noted.returncode == 0, noted.stderr
    empty = run_cli(vault, "note", "\x07\u2028")
    assert (empty.returncode, empty.stderr.strip()) == (1, "the note is empty")

    seed = tmp_path / "data"
    seed.mkdir()
    legacy = "a" * 64
    (seed / "sessions.json").write_text(
        json.dumps({legacy: {"caller_name": "Jo\u0000e\u2028Doe", "call_count": 2, "first_seen": 1764000000.0}})
    )
    (seed / "memories.json").write_text(json.dumps({legacy: {"facts": ["Owns\u0000 a cat", "z" * 3000]}}))
    (seed / "notes.json").write_text(
        json.dumps(
            [
                {"timestamp": 1764000000.0, "note": "Gate code\u0000 changed", "phone_hash": legacy},
                {"timestamp": 1764000000.0, "note": "Daily\u0000 note\u2028here"},
            ]
        )
    )
    imported = run_cli(vault, "import-seed", str(seed))
    assert imported.returncode == 0, imported.stderr
    no_control_bytes(vault)

    shown = run_cli(vault, "show", "--json", legacy)
    assert shown.returncode == 0, shown.stderr
    caller = json.loads(shown.stdout)
    assert caller["frontmatter"]["name"] == "Joe Doe"
    assert caller["facts"][0] == "Owns a cat"
    assert caller["facts"][1] == "z" * (500 - len(TRIMMED)) + TRIMMED
    assert caller["notes"] == ["- 2025-11-24: Gate code changed"]
    assert "\n- Daily note here\n" in (vault / "notes/2025-11-24.md").read_text(encoding="utf-8")
    shown = run_cli(vault, "show", "--json", MARIA)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["facts"] == ["Likes[31m tea with milk"]
    assert (vault / "notes/2026-11-25.md").read_text(encoding="utf-8") == "# 2026-11-25\n\n- Closed early\n"
    files = vault_snapshot(vault)
    rerun = run_cli(vault, "import-seed", str(seed))
    assert rerun.returncode == 0, rerun.stderr
    assert vault_snapshot(vault) == files  # normalised the same way twice: a rerun adds nothing
