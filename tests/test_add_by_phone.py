"""Add by phone (SPEC §14): a caller file a person makes with a `phone:` property, in any format, is
that caller; the service fills in `phone_hash` and removes the number before the file is committed,
so the number never reaches git history, whichever path commits the person's edit.

Real server, real vault, real git: every object in the repository is searched for the number.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import phonenumbers
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from server import changes
from tests.conftest import LiveServer, caught_up, git, running_server
from tests.live_helpers import frontmatter, key_for, prompt_of, request, wait_until
from tests.remotes import GitDaemon, Laptop, run_git

SHARED_SERVER_ENV = {"DEFAULT_REGION": "US"}
_numbers = itertools.count(100)


def next_number() -> str:
    return f"+1212555{next(_numbers):04d}"


def all_objects(vault: Path) -> bytes:
    """Every object git holds for the vault (commits, trees, blobs, reachable or not), as text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(
        ["git", "-C", str(vault), "cat-file", "--batch-all-objects", "--batch"],
        env=env,
        capture_output=True,
        check=True,
    ).stdout


def typed_forms(e164: str) -> list[str]:
    """How a person may type a number into `phone:`."""
    parsed = phonenumbers.parse(e164)
    national = phonenumbers.national_significant_number(parsed)
    formats = phonenumbers.PhoneNumberFormat
    return [
        e164,
        phonenumbers.format_number(parsed, formats.INTERNATIONAL),
        phonenumbers.format_number(parsed, formats.NATIONAL),
        phonenumbers.format_number(parsed, formats.RFC3966),
        national,
        f"{national[:3]}.{national[3:6]}.{national[6:]}",
        f'"{phonenumbers.format_number(parsed, formats.NATIONAL)}"',
        f"'{e164}'",
    ]


def leaked(vault: Path, e164: str, typed: str) -> list[str]:
    national = phonenumbers.national_significant_number(phonenumbers.parse(e164))
    objects = all_objects(vault)
    return [form for form in {e164, e164[1:], national, typed.strip("'\"")} if form.encode() in objects]


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=60)


# Against a live server: no shrinking (each example takes a commit), the failing example printed as found.
@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(form=st.integers(0, 7), name=_TEXT.filter(lambda t: t.strip()), notes=_TEXT, spaces=st.sampled_from(["", " "]))
def test_a_file_with_a_phone_becomes_that_caller_and_the_number_never_reaches_history(
    shared: LiveServer, form: int, name: str, notes: str, spaces: str
) -> None:
    e164 = next_number()
    typed = typed_forms(e164)[form]
    relpath = f"callers/new-{next(_numbers)}.md"
    note(f"typed: {typed!r}")
    text = f"---\nname: {json.dumps(name, ensure_ascii=False)}\nphone:{spaces} {typed}\n---\n# Someone\n\n"
    text += f"## Facts\n- Likes tea\n\n## Notes\n{notes}\n"
    (shared.vault / relpath).write_text(text, encoding="utf-8")

    def committed() -> bool:
        return git(shared.vault, "log", "-1", "--format=%H", "--", relpath) != "" and caught_up(shared)

    wait_until(committed, timeout=10, what="the hand-made file committed")
    meta = frontmatter(shared.vault / relpath)
    assert meta["phone_hash"] == key_for(e164)
    assert "phone" not in meta and meta["name"] == name
    assert git(shared.vault, "status", "--porcelain", "--", relpath) == ""
    answer = shared.personalize(request(e164)).json()
    assert answer["dynamic_variables"]["caller_known"] is True
    assert "Likes tea" in prompt_of(answer)
    assert leaked(shared.vault, e164, typed) == []


def test_an_unusable_number_is_never_committed_and_a_fixed_one_is_keyed(shared: LiveServer) -> None:
    relpath = "callers/not-a-number.md"
    path = shared.vault / relpath
    path.write_text("---\nname: Nobody\nphone: 555-CALL-ME-MAYBE 99\n---\n# Nobody\n", encoding="utf-8")
    wait_until(lambda: relpath in shared.admin("GET", "/health").json()["errors"], what="the file listed on /health")
    error = shared.admin("GET", "/health").json()["errors"][relpath]
    assert "phone: is not keyed yet" in error
    # A later file's quiet period ends after this one's: once it is committed, this one was passed over.
    later = next_number()
    (shared.vault / "callers/later.md").write_text(f"---\nphone: {later}\n---\n# Later\n", encoding="utf-8")
    wait_until(lambda: git(shared.vault, "log", "--format=%H", "--", "callers/later.md") != "", timeout=10)
    assert git(shared.vault, "log", "--format=%H", "--", relpath) == ""
    assert git(shared.vault, "status", "--porcelain", "--", relpath) == f"?? {relpath}\n"
    assert b"CALL-ME-MAYBE" not in all_objects(shared.vault)

    e164 = next_number()
    path.write_text(f"---\nname: Nobody\nphone: {e164}\n---\n# Nobody\n", encoding="utf-8")
    wait_until(lambda: git(shared.vault, "log", "--format=%H", "--", relpath) != "", timeout=10)
    assert frontmatter(path) == {"name": "Nobody", "phone_hash": key_for(e164)}
    wait_until(lambda: relpath not in shared.admin("GET", "/health").json()["errors"])
    assert leaked(shared.vault, e164, e164) == []


def test_a_number_added_to_a_known_callers_file_is_removed_when_a_write_commits_it_first(
    shared: LiveServer,
) -> None:
    e164 = next_number()
    response = shared.admin("POST", f"/api/memory/{e164}", json={"fact": "Has a cat"})
    assert response.status_code == 200
    wait_until(lambda: caught_up(shared))
    relpath = f"callers/{key_for(e164)[:12]}.md"
    path = shared.vault / relpath
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("---\n", f"---\nphone: {typed_forms(e164)[2]}\n", 1), encoding="utf-8")
    # A write to the same file at once: the person's edit is committed first, keyed.
    assert shared.admin("POST", f"/api/memory/{e164}", json={"fact": "Has a dog"}).status_code == 200
    wait_until(lambda: caught_up(shared) and git(shared.vault, "status", "--porcelain", "--", relpath) == "")
    meta = frontmatter(path)
    assert meta["phone_hash"] == key_for(e164) and "phone" not in meta
    assert leaked(shared.vault, e164, typed_forms(e164)[2]) == []


def test_edits_made_while_the_service_was_stopped_are_keyed_before_the_start_up_commit(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(DEFAULT_REGION="US")
    server.stop()
    e164 = next_number()
    typed = typed_forms(e164)[2]
    (server.vault / "callers" / "offline.md").write_text(f"---\nphone: {typed}\n---\n# Offline\n", encoding="utf-8")
    server.start()
    assert git(server.vault, "status", "--porcelain") == ""
    assert frontmatter(server.vault / "callers/offline.md") == {"phone_hash": key_for(e164)}
    assert server.personalize(request(e164)).json()["dynamic_variables"]["caller_known"] is True
    assert leaked(server.vault, e164, typed) == []


def test_with_store_phone_numbers_the_number_is_kept_in_e164_only(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(DEFAULT_REGION="US", STORE_PHONE_NUMBERS="true")
    e164 = next_number()
    typed = typed_forms(e164)[2]
    (server.vault / "callers" / "kept.md").write_text(f"---\nphone: {typed}\n---\n# Kept\n", encoding="utf-8")
    wait_until(lambda: git(server.vault, "log", "--format=%H", "--", "callers/kept.md") != "", timeout=10)
    assert frontmatter(server.vault / "callers/kept.md") == {"phone_hash": key_for(e164), "phone": e164}
    assert typed.encode() not in all_objects(server.vault)


@given(
    before=_TEXT.filter(lambda t: "---" not in t and "phone" not in t),
    number=st.sampled_from(typed_forms("+12125550100")),
)
def test_keying_removes_the_number_and_keeps_every_other_byte(before: str, number: str) -> None:
    body = f"# Someone\n\n{before}\n"
    text = f"---\nname: Jo\nphone: {number}\ntags: [a]\n---\n{body}"
    assert changes.typed_phone(text) == number.strip("'\"")
    keyed = changes.with_phone_keyed(text, "ab" * 32, None)
    assert keyed == f'---\nname: Jo\ntags: [a]\nphone_hash: "{"ab" * 32}"\n---\n{body}'
    assert changes.typed_phone(keyed) is None and changes.has_phone_hash(keyed)


def test_a_merge_from_the_remote_keys_a_persons_uncommitted_file_before_committing_it(
    tmp_path: Path, daemon: GitDaemon
) -> None:
    url = daemon.bare()
    # A long quiet period: only the merge, not the watcher, commits the person's file.
    with running_server(tmp_path, GIT_REMOTE=url, SYNC_SECONDS="1", HAND_EDIT_QUIET_SECONDS="120") as server:
        wait_until(lambda: run_git(daemon.base / "vault.git", "log", "main", check=False).returncode == 0, timeout=10)
        laptop = Laptop.clone(url, tmp_path / "laptop")
        e164 = next_number()
        typed = typed_forms(e164)[1]
        (server.vault / "callers" / "at-the-desk.md").write_text(f"---\nphone: {typed}\n---\n# Desk\n", "utf-8")
        laptop.write("notes/2030-01-01.md", "# 2030-01-01\n\n- From the laptop\n")
        laptop.commit_all("a note from the laptop")
        assert laptop.push().returncode == 0
        wait_until(lambda: (server.vault / "notes/2030-01-01.md").exists(), timeout=15, what="the merge")
        wait_until(lambda: git(server.vault, "status", "--porcelain") == "", timeout=10, what="the file committed")
        assert frontmatter(server.vault / "callers/at-the-desk.md") == {"phone_hash": key_for(e164)}
        assert leaked(server.vault, e164, typed) == []
