"""The watcher over the live server: hand edits reach the next call fast and are committed (SPEC §3, §4).

Waiting uses the API (`/api/callers/...` and its preview), which has no side effects: a personalize
call records the call, and that write would carry a hand edit into the index by itself.

Most tests share one server: each edits the files of a folder of its own, for callers of its own,
and checks the history of those files. The ones that need a vault's whole history, other settings
or a restart start their own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from server import gitmerge
from server.service import open_service
from server.watcher import Seen
from tests.conftest import MARIA, OTHER, LiveServer, git, make_settings, settled
from tests.live_helpers import (
    assert_valid_answer,
    caller_md,
    commits,
    frontmatter,
    key_for,
    known_file,
    preview,
    prompt_of,
    request,
    soul_variables,
    source_of,
    wait_until,
)

FACT = "Is allergic to penicillin"


# A reconcile scan too slow to mask a missed watch event: the watcher alone is tested.
SHARED_SERVER_ENV = {"RECONCILE_SECONDS": "60"}


@dataclass(frozen=True)
class Own:
    """What a test on the shared server keeps to: its callers' numbers and a folder of its own."""

    maria: str
    other: str
    folder: str  # vault-relative, under callers/


@pytest.fixture
def own(fresh_number: Callable[[], str]) -> Own:
    maria = fresh_number()
    return Own(maria, fresh_number(), f"callers/t{maria[-4:]}")


@pytest.fixture
def server(shared: LiveServer, own: Own) -> LiveServer:
    """The shared server, with the test's folder made."""
    (shared.vault / own.folder).mkdir()
    return shared


def personalize(server: LiveServer, number: str, soul_vars: dict | None = None) -> dict:
    response = server.personalize(request(number))
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid_answer(body, soul_variables(server.vault) if soul_vars is None else soul_vars)
    return body


def add_maria(server: LiveServer, own: Own, name: str = "maria.md") -> Path:
    """Maria's file, as a person writes it, in the test's folder (with the test's number for her)."""
    path = server.vault / own.folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(caller_md(own.maria), encoding="utf-8")
    wait_until(lambda: known_file(server, own.maria) == f"{own.folder}/{name}", what="Maria to be indexed")
    return path


def sees(server: LiveServer, number: str, text: str) -> bool:
    answer = preview(server, number)
    return answer is not None and text in prompt_of(answer)


def health(server: LiveServer) -> dict:
    return server.admin("GET", "/health").json()  # the errors are shown only with the admin key


def hand_edit_commits(vault: Path, relpath: str) -> list[dict]:
    return [c for c in commits(vault) if relpath in c["files"] and source_of(c["message"]) == "hand-edit"]


def tracked(vault: Path, folder: str) -> list[str]:
    """The files git tracks in `folder`."""
    return git(vault, "ls-files", folder).split("\n")[:-1]


def callers_on_disk(vault: Path, folder: str) -> int:
    return len(list((vault / folder).rglob("*.md")))


def test_a_hand_edit_reaches_the_next_call_within_a_second(server: LiveServer, own: Own) -> None:
    path = add_maria(server, own)
    assert FACT not in prompt_of(personalize(server, own.maria))
    wait_until(lambda: settled(server), what="the recorded call to be committed")
    text = path.read_text(encoding="utf-8").replace("## Calls\n", f"- {FACT}\n\n## Calls\n", 1)
    assert FACT in text
    started = time.monotonic()
    path.write_text(text, encoding="utf-8")
    wait_until(lambda: sees(server, own.maria, FACT), timeout=2, interval=0.005, what="the hand edit")
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the hand edit took {elapsed:.3f} s to reach the index"
    body = personalize(server, own.maria)
    assert FACT in prompt_of(body)
    assert FACT in body["dynamic_variables"]["caller_memory"]


def test_hand_edits_are_committed_after_the_quiet_period(server: LiveServer, own: Own) -> None:
    path = add_maria(server, own)
    relpath = f"{own.folder}/maria.md"
    wait_until(lambda: hand_edit_commits(server.vault, relpath), what="the hand-edit commit")
    wait_until(lambda: settled(server))
    first = hand_edit_commits(server.vault, relpath)
    assert len(first) == 1
    assert own.maria not in first[0]["message"]
    # A second edit is a second commit, with the change in it.
    path.write_text(path.read_text(encoding="utf-8").replace("## Calls\n", f"- {FACT}\n\n## Calls\n"), "utf-8")
    wait_until(lambda: len(hand_edit_commits(server.vault, relpath)) == 2, what="the second commit")
    latest = hand_edit_commits(server.vault, relpath)[0]
    assert f"+- {FACT}" in git(server.vault, "show", latest["sha"], "--", relpath)
    assert git(server.vault, "status", "--porcelain") == ""


def test_files_edited_together_are_committed_together(server: LiveServer, own: Own) -> None:
    # Quiet periods ending within a second of each other share one hand-edit commit, each file listed.
    add_maria(server, own)
    maria_path = f"{own.folder}/maria.md"
    wait_until(lambda: settled(server) and hand_edit_commits(server.vault, maria_path), what="Maria committed")
    before = len(commits(server.vault))
    (server.vault / own.folder / "olga.md").write_text(caller_md(own.other, name="Olga"), encoding="utf-8")
    time.sleep(0.1)
    maria = server.vault / maria_path
    maria.write_text(maria.read_text(encoding="utf-8").replace("## Calls\n", f"- {FACT}\n\n## Calls\n"), "utf-8")
    wait_until(lambda: len(commits(server.vault)) > before and settled(server), what="the hand-edit commit")
    latest = commits(server.vault)[0]
    assert len(commits(server.vault)) == before + 1
    assert sorted(latest["files"]) == [maria_path, f"{own.folder}/olga.md"]
    assert latest["message"] == (
        f"2 changes\n\n- hand edit: {own.folder}/olga.md edited\n- hand edit: {maria_path} edited\n\nSource: hand-edit"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("x.md", "Maria Lopez.md"),  # the new name sorts first
        ("A.md", "Maria Lopez.md"),  # the old name sorts first
        ("x.md", "vip/Maria Lopez.md"),  # moved into a folder of its own
    ],
)
def test_a_renamed_or_moved_file_keeps_the_caller(server: LiveServer, own: Own, old: str, new: str) -> None:
    path = add_maria(server, own, old)
    wait_until(lambda: settled(server), what="the new file to be committed")
    target = server.vault / own.folder / new
    target.parent.mkdir(exist_ok=True)
    path.rename(target)
    files = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        files.append(known_file(server, own.maria))
        if files[-1] == f"{own.folder}/{new}":
            break
    assert files[-1] == f"{own.folder}/{new}", files
    assert None not in files, "the caller was never unknown during the rename"
    body = personalize(server, own.maria)
    assert body["dynamic_variables"]["caller_known"] is True
    assert body["dynamic_variables"]["caller_name"] == "Maria Lopez"
    assert body["dynamic_variables"]["call_count"] == 3
    assert "Prefers morning appointments" in prompt_of(body)
    wait_until(lambda: settled(server), what="the rename to be committed")
    assert tracked(server.vault, own.folder) == [f"{own.folder}/{new}"]
    assert health(server)["errors"] == {}
    assert callers_on_disk(server.vault, own.folder) == 1, "recording the call wrote to the renamed file"


def test_a_folder_renamed_or_moved_away_carries_its_callers(server: LiveServer, own: Own, tmp_path: Path) -> None:
    callers = health(server)["callers"]
    (server.vault / own.folder / "vip").mkdir()
    add_maria(server, own, "vip/maria.md")
    (server.vault / own.folder / "vip").rename(server.vault / own.folder / "clients")
    wait_until(
        lambda: known_file(server, own.maria) == f"{own.folder}/clients/maria.md", timeout=1, what="the renamed folder"
    )
    assert health(server)["callers"] == callers + 1
    assert personalize(server, own.maria)["dynamic_variables"]["caller_known"] is True
    wait_until(lambda: settled(server), what="the recorded call and the move to be committed")
    # Moving the folder out of the vault takes the caller with it.
    (server.vault / own.folder / "clients").rename(tmp_path / "clients")
    wait_until(lambda: known_file(server, own.maria) is None, timeout=1, what="the caller to leave with the folder")
    assert health(server)["callers"] == callers
    # ... and moving it back in brings the caller back.
    (tmp_path / "clients").rename(server.vault / own.folder / "back")
    wait_until(
        lambda: known_file(server, own.maria) == f"{own.folder}/back/maria.md", timeout=1, what="the folder to return"
    )
    assert personalize(server, own.maria)["dynamic_variables"]["call_count"] == 4


def test_editor_save_by_rename(server: LiveServer, own: Own) -> None:
    path = add_maria(server, own)
    # Write to a temporary file beside it, then rename it over the original (atomic save).
    temp = path.with_name(".maria.md.tmp")
    temp.write_text(caller_md(own.maria, facts=["Prefers morning appointments", FACT]), encoding="utf-8")
    os.replace(temp, path)
    wait_until(lambda: sees(server, own.maria, FACT), timeout=1, what="the saved file")
    # vim's way: move the original to a backup, write a new file, delete the backup.
    backup = path.with_name("maria.md~")
    os.rename(path, backup)
    path.write_text(caller_md(own.maria, facts=["Prefers morning appointments", FACT, "Drives a red car"]), "utf-8")
    backup.unlink()
    wait_until(lambda: sees(server, own.maria, "Drives a red car"), timeout=1, what="the second saved file")
    assert known_file(server, own.maria) == f"{own.folder}/maria.md"
    assert health(server)["errors"] == {}
    wait_until(lambda: settled(server), what="the saves to be committed")
    assert tracked(server.vault, own.folder) == [f"{own.folder}/maria.md"]
    assert "Drives a red car" in git(server.vault, "show", f"HEAD:{own.folder}/maria.md")


def test_deleting_the_file_forgets_the_caller(server: LiveServer, own: Own) -> None:
    path = add_maria(server, own)
    relpath = f"{own.folder}/maria.md"
    wait_until(lambda: hand_edit_commits(server.vault, relpath), what="the new file to be committed")
    callers = health(server)["callers"]
    path.unlink()
    wait_until(lambda: known_file(server, own.maria) is None, timeout=1, what="the caller to be forgotten")
    assert health(server)["callers"] == callers - 1
    body = personalize(server, own.maria)
    assert body["dynamic_variables"]["caller_known"] is False
    assert "Prefers morning appointments" not in str(body)
    wait_until(lambda: settled(server), what="the deletion to be committed")
    assert git(server.vault, "ls-files", relpath) == ""
    removed = [c for c in commits(server.vault) if relpath in c["files"]]
    assert [source_of(c["message"]) for c in removed] == ["hand-edit", "hand-edit"]


def test_a_broken_edit_keeps_the_last_good_version_and_shows_on_health(server: LiveServer, own: Own) -> None:
    path = add_maria(server, own)
    relpath = f"{own.folder}/maria.md"
    assert health(server)["status"] == "ok"
    callers = health(server)["callers"]
    broken = caller_md(own.maria, facts=["Prefers morning appointments", FACT]).replace(
        "call_count: 3\n", "call_count: [3\n", 1
    )
    path.write_text(broken, encoding="utf-8")
    status = wait_until(
        lambda: (h := health(server))["status"] == "degraded" and h, timeout=2, what="/health to show the error"
    )
    assert list(status["errors"]) == [relpath]
    assert status["files_with_errors"] == 1
    assert status["callers"] == callers
    body = personalize(server, own.maria)
    assert body["dynamic_variables"]["caller_known"] is True
    assert body["dynamic_variables"]["call_count"] == 3
    assert "Prefers morning appointments" in prompt_of(body)
    assert FACT not in prompt_of(body), "the broken version is not served"
    # The call cannot be recorded into the broken file, which is left exactly as the person wrote it.
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        assert path.read_text(encoding="utf-8") == broken, "a broken file is never overwritten"
        time.sleep(0.02)

    path.write_text(caller_md(own.maria, facts=["Prefers morning appointments", FACT], call_count=7), encoding="utf-8")
    wait_until(lambda: health(server)["status"] == "ok", timeout=2, what="/health to recover")
    assert health(server)["errors"] == {}
    body = personalize(server, own.maria)
    # 7 as written, or 8 if the call made while the file was broken is counted once it is repaired.
    assert body["dynamic_variables"]["call_count"] in (7, 8)
    assert FACT in prompt_of(body)


def test_editing_the_soul_changes_the_next_answer(server: LiveServer) -> None:
    soul = server.vault / "soul.md"
    original = soul.read_text(encoding="utf-8")
    old_vars = soul_variables(server.vault)
    meta, body = original.split("\n---\n", 1)
    new_meta = meta.replace('business_name: "our office"', 'business_name: "Sunrise Dental"')
    new_meta += '\nparking_info: "Free parking behind the building"'
    new_meta = new_meta.replace("How can I help you today?", "Which tooth hurts?")
    assert new_meta != meta
    soul.write_text(f"{new_meta}\n---\nAlways mention the ZEBRA-7 policy.\n{body}", encoding="utf-8")

    def changed() -> dict | None:
        body = personalize(server, "anonymous", old_vars)
        return body if body["dynamic_variables"]["business_name"] == "Sunrise Dental" else None

    answer = wait_until(changed, timeout=1, interval=0.02, what="the soul edit")
    assert_valid_answer(answer, soul_variables(server.vault))
    assert answer["dynamic_variables"]["parking_info"] == "Free parking behind the building"
    assert prompt_of(answer).startswith("Always mention the ZEBRA-7 policy.")
    assert answer["conversation_config_override"]["agent"]["first_message"].endswith("Which tooth hurts?")
    wait_until(lambda: hand_edit_commits(server.vault, "soul.md"), what="the soul edit to be committed")

    # A broken soul keeps its last good version in service and shows on /health.
    good = soul.read_text(encoding="utf-8")
    soul.write_text(good.replace("business_name:", "business_name: [", 1), encoding="utf-8")
    status = wait_until(lambda: (h := health(server))["status"] == "degraded" and h, timeout=1, what="the error")
    assert list(status["errors"]) == ["soul.md"]
    still = personalize(server, "anonymous", answer["dynamic_variables"])
    assert still == answer
    soul.write_text(good, encoding="utf-8")
    wait_until(lambda: health(server)["status"] == "ok", timeout=1, what="the repaired soul")

    # The shared vault gets its soul back for the tests after this one.
    soul.write_text(original, encoding="utf-8")
    wait_until(lambda: personalize(server, "anonymous", old_vars)["dynamic_variables"]["business_name"] == "our office")


def test_the_services_own_writes_are_not_hand_edits(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(RECONCILE_SECONDS="0.5")  # the reconcile scan must not take them for hand edits either
    personalize(server, OTHER)
    wait_until(lambda: known_file(server, OTHER), what="the call to be recorded")
    wait_until(lambda: settled(server))
    personalize(server, OTHER)
    wait_until(lambda: len(commits(server.vault)) == 3 and settled(server), what="the second call to be recorded")
    response = server.admin("POST", f"/api/memory/{OTHER}", json={"fact": "Likes jazz"})
    assert response.status_code == 200, response.text
    # Longer than the quiet period (0.3 s) and a reconcile scan (every 0.5 s) after the write.
    time.sleep(1.2)
    assert [source_of(c["message"]) for c in commits(server.vault)] == ["api", "webhook", "webhook", "cli"]
    assert git(server.vault, "status", "--porcelain") == ""


def test_a_pending_hand_edit_keeps_its_source_when_the_service_writes_the_file(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(HAND_EDIT_QUIET_SECONDS="1", RECONCILE_SECONDS="60")
    path = server.vault / "callers" / "maria.md"
    path.write_text(caller_md(MARIA), encoding="utf-8")
    wait_until(lambda: known_file(server, MARIA) == "callers/maria.md", what="Maria to be indexed")
    wait_until(lambda: hand_edit_commits(server.vault, "callers/maria.md"), timeout=5, what="the first commit")
    path.write_text(caller_md(MARIA, facts=["Prefers morning appointments", FACT]), encoding="utf-8")
    wait_until(lambda: sees(server, MARIA, FACT), timeout=1, what="the hand edit")
    personalize(server, MARIA)  # its recording rewrites the file while the hand edit waits for its quiet period
    wait_until(lambda: frontmatter(path)["call_count"] == 4 and settled(server), what="the call to be recorded")
    time.sleep(1.2)  # the hand edit's quiet period (1 s) passes: whatever it commits is in now
    introduced = git(server.vault, "log", "--format=%B%x1e", "-S", FACT, "--", "callers/maria.md").split("\x1e")
    assert source_of(introduced[0]) == "hand-edit"


def test_hand_edits_are_committed_on_shutdown_and_while_stopped_on_start(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(HAND_EDIT_QUIET_SECONDS="30")
    vault = server.vault
    (vault / "callers" / "early.md").write_text(caller_md(OTHER, name="Olga"), encoding="utf-8")
    wait_until(lambda: known_file(server, OTHER), timeout=1, what="the watcher to see the edit")
    server.stop()  # long before the quiet period ends: the pending hand edit is committed on the way out
    assert len(hand_edit_commits(vault, "callers/early.md")) == 1
    assert git(vault, "status", "--porcelain") == ""

    (vault / "callers" / "offline.md").write_text(caller_md(MARIA), encoding="utf-8")
    server = server_factory(vault)
    body = personalize(server, MARIA)
    assert body["dynamic_variables"]["caller_known"] is True
    assert body["dynamic_variables"]["caller_name"] == "Maria Lopez"
    assert len(hand_edit_commits(vault, "callers/offline.md")) == 1, "committed at start-up, before serving"
    assert personalize(server, OTHER)["dynamic_variables"]["caller_name"] == "Olga"
    wait_until(lambda: settled(server))


@pytest.mark.anyio
async def test_a_caller_file_git_removes_and_rewrites_during_the_services_merge_stays_known(tmp_path: Path) -> None:
    # git checks a merged file out by removing it and writing the new version: the watcher may look
    # in between. Until the merge is done the caller stays known; once it is, what is there counts.
    root = tmp_path / "vault"
    open_service(make_settings(root))
    (root / "callers" / "maria.md").write_text(caller_md(MARIA), encoding="utf-8")
    service = open_service(make_settings(root))
    watcher, index = service.watcher, service.memory.index
    assert index.caller(key_for(MARIA)) is not None
    mark = root / ".git" / "memory-bridge" / "merging"
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()
    assert gitmerge.merging(root)
    (root / "callers" / "maria.md").unlink()
    assert watcher.refresh("callers/maria.md") is Seen.BUSY
    assert index.caller(key_for(MARIA)) is not None
    mark.unlink()  # the merge is done and the file stayed away: the merge removed it
    assert watcher.refresh("callers/maria.md") is Seen.CHANGED
    assert index.caller(key_for(MARIA)) is None
