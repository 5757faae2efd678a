"""Conflict markers (SPEC §11 "Never:"): a file holding them is treated like broken YAML, and never committed.

The rule first (pure), then the live server: the last good version stays in service, `/health` lists
the file, the service commits it never and writes to it never, until a person resolves it.
"""

from __future__ import annotations

import re
import time

import pytest

from server.conflicts import first_marker, found_in
from server.parse import VaultFileError, parse_caller, parse_note, parse_soul
from tests.conftest import MARIA, WEBHOOK_SECRET, LiveServer, git, vault_head
from tests.live_helpers import caller_md, preview, prompt_of, wait_until
from tests.test_gitstate import FACTS, no_marker_in_history
from tests.test_watcher import health, settled

MARIA_FILE = "callers/maria.md"
OURS, THEIRS = "Moved to Elm Street", "Moved to Oak Avenue"
BLOCK = f"<<<<<<< HEAD\n- {OURS}\n=======\n- {THEIRS}\n>>>>>>> 1a2b3c4 (Maria moved)\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"# Maria\n## Facts\n{BLOCK}", 3),
        # diff3 style, with the base between `|||||||` and `=======`; the labels are git's, or none.
        ("a\n<<<<<<< ours\nx\n||||||| base\nw\n=======\ny\n>>>>>>> theirs\n", 2),
        ("<<<<<<<\nx\n=======\ny\n>>>>>>>", 1),
        # CRLF files get CRLF markers.
        ("a\r\n<<<<<<< HEAD\r\nx\r\n=======\r\ny\r\n>>>>>>> b\r\n", 2),
        # A conflict in the frontmatter is one too; the first block is the one reported.
        ("---\n<<<<<<< HEAD\nname: A\n=======\nname: B\n>>>>>>> b\n---\n" + BLOCK, 2),
        # A stray `=======` before the block (a heading underline) does not hide it.
        ("Title\n=======\n\n<<<<<<< HEAD\nx\n=======\ny\n>>>>>>> b\n", 4),
    ],
)
def test_a_block_of_markers_is_a_conflict(text: str, line: int) -> None:
    assert first_marker(text) == line
    assert found_in(text.encode())


@pytest.mark.parametrize(
    "text",
    [
        "Family\n=======\nTwo kids.\n",  # a setext heading underline
        "Family\n=======\n\nWork\n=======\n",
        "<<<<<<< HEAD\nx\n=======\ny\n",  # never closed
        "x\n=======\ny\n>>>>>>> b\n",  # never opened
        ">>>>>>> b\n=======\n<<<<<<< HEAD\n",  # out of order
        "<<<<<<< HEAD\nx\n========\ny\n>>>>>>> b\n",  # eight: an underline, not git's separator
        "<<<<<<<< HEAD\nx\n=======\ny\n>>>>>>>> b\n",  # eight-character markers are not git's default
        " <<<<<<< HEAD\nx\n=======\ny\n >>>>>>> b\n",  # indented
        "<<<<<<<HEAD\nx\n=======\ny\n>>>>>>>b\n",  # no space before the label
        "x ======= y\n",
        "",
    ],
)
def test_lines_that_form_no_block_are_not_a_conflict(text: str) -> None:
    assert first_marker(text) is None
    assert not found_in(text.encode())


def test_every_kind_of_vault_file_with_markers_is_refused_by_the_parser() -> None:
    marked = caller_md(MARIA, facts=FACTS).replace("## Calls", f"{BLOCK}\n## Calls", 1)
    assert marked.splitlines()[15] == "<<<<<<< HEAD"
    message = "has conflict markers (line 16): resolve the merge"
    for parse in (parse_caller, parse_soul, lambda text: parse_note("2026-11-20", text)):
        with pytest.raises(VaultFileError, match=f"^{re.escape(message)}$"):
            parse(marked)
    assert parse_caller(caller_md(MARIA, notes="Family\n=======\nTwo kids.")).notes == (
        "Family",
        "=======",
        "Two kids.",
    )


def test_a_file_with_markers_is_served_as_its_last_good_version_and_never_committed(
    server: LiveServer,
) -> None:
    vault = server.vault
    path = vault / MARIA_FILE
    good = caller_md(MARIA, facts=[*FACTS, OURS])
    path.write_text(good, encoding="utf-8")
    wait_until(lambda: preview(server, MARIA) and settled(server), what="Maria's file to be committed")
    head = vault_head(vault)

    # As a person leaves it after `git stash pop` or a merge on a laptop without the merge driver.
    marked = good.replace(f"- {OURS}\n", BLOCK, 1)
    path.write_text(marked, encoding="utf-8")
    error = "has conflict markers (line 15): resolve the merge"
    assert marked.splitlines()[14] == "<<<<<<< HEAD"
    status = wait_until(lambda: (h := health(server))["errors"] and h, timeout=3, what="/health to list the file")
    assert status["status"] == "degraded" and status["git_operation"] is None
    assert status["errors"] == {MARIA_FILE: error}
    answer = preview(server, MARIA)
    assert answer is not None and OURS in prompt_of(answer) and THEIRS not in prompt_of(answer)
    assert "<<<<<<<" not in str(answer) and ">>>>>>>" not in str(answer)

    refused = server.admin("POST", f"/api/memory/{MARIA}", json={"fact": "Is learning Portuguese"})
    assert refused.status_code == 400
    assert refused.json()["detail"] == "the caller's file has conflict markers (line 15): resolve the merge first"
    tool = server.client.post(
        "/tools/remember",
        json={"fact": "Is learning Portuguese", "caller_id": MARIA, "called_number": "+14155550199"},
        headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"},
    )
    assert tool.status_code == 200
    assert tool.json() == {
        "status": "not_saved",
        "message": "I couldn't save that: the caller's file has conflict markers (line 15): resolve the merge first.",
    }
    time.sleep(1.0)  # over three quiet periods (0.3 s) of the hand edit
    assert path.read_text(encoding="utf-8") == marked, "the service never writes to it"
    assert vault_head(vault) == head, "the file with markers is never committed"
    assert git(vault, "status", "--porcelain") == f" M {MARIA_FILE}\n"
    assert health(server)["errors"] == {MARIA_FILE: error}

    # A person resolves it: committed as their hand edit, and served.
    resolved = caller_md(MARIA, facts=[*FACTS, THEIRS])
    path.write_text(resolved, encoding="utf-8")
    wait_until(lambda: settled(server) and vault_head(vault) != head, timeout=5, what="the resolved file's commit")
    assert git(vault, "log", "--format=%B", "-n", "1").strip().endswith("Source: hand-edit")
    assert git(vault, "show", f"HEAD:{MARIA_FILE}") == resolved
    answer = preview(server, MARIA)
    assert answer is not None and THEIRS in prompt_of(answer) and OURS not in prompt_of(answer)
    assert health(server)["status"] == "ok"
    assert server.admin("POST", f"/api/memory/{MARIA}", json={"fact": "Is learning Portuguese"}).status_code == 200
    no_marker_in_history(vault)


def test_a_setext_underline_in_notes_prose_is_not_a_conflict_marker(server: LiveServer) -> None:
    notes = "Family\n=======\nTwo kids, both at Lincoln Elementary.\n\nWork\n=======\nNight shifts."
    text = caller_md(MARIA, facts=FACTS, notes=notes)
    (server.vault / MARIA_FILE).write_text(text, encoding="utf-8")
    wait_until(lambda: preview(server, MARIA) and settled(server), what="Maria's file to be committed")
    assert health(server)["errors"] == {} and health(server)["status"] == "ok"
    assert git(server.vault, "show", f"HEAD:{MARIA_FILE}") == text
    assert "Two kids, both at Lincoln Elementary." in prompt_of(preview(server, MARIA) or {})
    response = server.admin("POST", f"/api/memory/{MARIA}", json={"fact": "Is learning Portuguese"})
    assert response.status_code == 200, response.text
    committed = git(server.vault, "show", f"HEAD:{MARIA_FILE}")
    assert committed == text.replace(f"- {FACTS[-1]}\n", f"- {FACTS[-1]}\n- Is learning Portuguese\n", 1)
    assert health(server)["errors"] == {}

    # The same prose after a merge that conflicted in it: the block is found, past the underlines.
    merged = committed.replace("Night shifts.", "<<<<<<< HEAD\nNight shifts.\n=======\nDay shifts.\n>>>>>>> b\n")
    (server.vault / MARIA_FILE).write_text(merged, encoding="utf-8")
    line = merged.splitlines().index("<<<<<<< HEAD") + 1
    assert merged.splitlines()[line - 3 : line - 1] == ["Work", "======="]
    errors = wait_until(lambda: health(server)["errors"], timeout=3, what="/health to list the file")
    assert errors == {MARIA_FILE: f"has conflict markers (line {line}): resolve the merge"}

    # Forgetting the caller removes the file; what it held with the markers never reaches history.
    assert server.admin("DELETE", f"/api/callers/{MARIA}").status_code == 200
    wait_until(lambda: settled(server), timeout=5, what="the removal to be committed")
    assert not (server.vault / MARIA_FILE).exists()
    assert git(server.vault, "ls-files", MARIA_FILE) == ""
    assert "Day shifts." not in git(server.vault, "log", "--all", "-p", "--format=")
    no_marker_in_history(server.vault)
