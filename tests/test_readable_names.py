"""Readable names (SPEC §14): once a caller's name is known, the file the service named takes it.

`callers/<hash>.md` becomes `callers/Maria Lopez.md` (`Maria Lopez 2.md` for a second Maria) in the
same commit as the change, which git records as a rename; the generated heading follows; a file a
person named is never renamed. A real server, real vault, real git.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server import filenames
from server.changes import with_named_heading
from tests.calls import Call, encode
from tests.conftest import WEBHOOK_SECRET, LiveServer, caught_up, elevenlabs_signature, git, running_server, settled
from tests.live_helpers import frontmatter, key_for, request, wait_until
from tests.remotes import GitDaemon, Laptop, run_git


def deliver(server: LiveServer, body: bytes) -> None:
    headers = {"content-type": "application/json", "elevenlabs-signature": elevenlabs_signature(body)}
    response = server.client.post("/webhook/post-call", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "held", response.text
    # Held, then written back in the background (SPEC §13): the tests look once it is.
    assert server.wait_for(lambda: caught_up(server), timeout=10), "the held event was not applied"


def call_with_name(number: str, conv: str, name: str | None) -> bytes:
    call = Call(number, conv, "CA" + conv[-32:].rjust(32, "0"))
    data = call.payload()
    results = data["data"]["analysis"]["data_collection_results"]
    if name is None:
        results.clear()
    else:
        results["caller_name"]["value"] = name
    return encode(data)


def last_commit_files(server: LiveServer) -> list[str]:
    # A new caller's file is small: the call and the name change more than half of it, so git's
    # default 50% similarity would list the rename as a removal and an addition.
    return git(server.vault, "show", "-M20%", "--name-status", "--format=", "HEAD").splitlines()


def test_a_name_from_the_call_renames_the_file_in_the_same_commit_and_the_heading_follows(
    shared: LiveServer, fresh_number
) -> None:  # type: ignore[no-untyped-def]
    number = fresh_number()
    key = key_for(number)
    old = f"callers/{key[:12]}.md"
    assert shared.admin("POST", f"/api/memory/{number}", json={"fact": "Has a dog"}).status_code == 200
    wait_until(lambda: caught_up(shared))
    assert f"\n# Caller {key[:12]}\n" in (shared.vault / old).read_text()

    deliver(shared, call_with_name(number, "conv_" + number[1:].rjust(28, "0"), "Ada Quist"))
    wait_until(lambda: caught_up(shared))
    new = "callers/Ada Quist.md"
    assert not (shared.vault / old).exists()
    text = (shared.vault / new).read_text()
    assert "\n# Ada Quist\n" in text and "# Caller" not in text and "- Has a dog\n" in text
    assert frontmatter(shared.vault / new)["name"] == "Ada Quist"
    # One commit: the call and the rename, which git sees as a rename.
    assert [line.split("\t")[0][0] + "\t" + "\t".join(line.split("\t")[1:]) for line in last_commit_files(shared)] == [
        f"R\t{old}\t{new}"
    ]
    message = git(shared.vault, "log", "-1", "--format=%B")
    assert f"- file named: {old} -> {new}\n" in message and message.rstrip().endswith("Source: webhook")
    followed = git(shared.vault, "log", "--follow", "-M20%", "--format=%s", "--", new).splitlines()
    assert followed[-1] == f"fact for {key[:12]}"  # its history follows the rename
    # The server knows the file by its new name; nothing is left for the watcher to commit.
    wait_until(lambda: settled(shared))
    assert shared.admin("GET", f"/api/callers/{number}").json()["file"] == new
    assert shared.personalize(request(number)).json()["dynamic_variables"]["caller_name"] == "Ada Quist"
    # A later write goes to the renamed file, and never back to the old name.
    assert shared.admin("POST", f"/api/memory/{number}", json={"fact": "Likes tea"}).status_code == 200
    wait_until(lambda: settled(shared))
    assert "- Likes tea\n" in (shared.vault / new).read_text() and not (shared.vault / old).exists()


def test_a_caller_stays_known_to_every_call_while_their_file_takes_their_name(shared: LiveServer, fresh_number) -> None:  # type: ignore[no-untyped-def]
    # Between the file's move on disk and the rename's commit, the watcher sees the old path gone:
    # a call in that moment must still find the caller (not be told it is a new caller).
    numbers = [fresh_number() for _ in range(6)]
    for number in numbers:
        assert shared.admin("POST", f"/api/memory/{number}", json={"fact": "Has a cat"}).status_code == 200
    wait_until(lambda: caught_up(shared))
    answers: list[bool] = []
    stop = threading.Event()

    def keep_calling() -> None:
        with httpx.Client(base_url=shared.url, timeout=10) as client:
            while not stop.is_set():
                for number in numbers:
                    headers = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
                    answer = client.post("/webhook/personalize", json=request(number), headers=headers)
                    answers.append(answer.json()["dynamic_variables"]["caller_known"])

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        for n, number in enumerate(numbers):
            body = call_with_name(number, "conv_" + number[1:].rjust(28, "0"), f"Nia Osei{'x' * n}")
            headers = {"content-type": "application/json", "elevenlabs-signature": elevenlabs_signature(body)}
            assert shared.client.post("/webhook/post-call", content=body, headers=headers).json()["status"] == "held"

        def named() -> bool:
            files = [shared.admin("GET", f"/api/callers/{number}").json()["file"] for number in numbers]
            return all(file.startswith("callers/Nia Osei") for file in files)

        wait_until(named, timeout=15)
    finally:
        stop.set()
        caller.join()
    assert answers and all(answers), f"{answers.count(False)} of {len(answers)} calls took a known caller for new"


def test_a_second_caller_of_the_same_name_gets_the_next_free_name_any_case(shared: LiveServer, fresh_number) -> None:  # type: ignore[no-untyped-def]
    names = []
    for n, spelled in enumerate(("Bo Lind", "bo lind", "BO  LIND")):
        number = fresh_number()
        deliver(shared, call_with_name(number, f"conv_{number[1:]}{n}".ljust(33, "0"), spelled))
        wait_until(lambda: caught_up(shared))
        names.append(shared.admin("GET", f"/api/callers/{number}").json()["file"])
    assert names == ["callers/Bo Lind.md", "callers/bo lind 2.md", "callers/BO LIND 3.md"]
    wait_until(lambda: settled(shared))


def test_a_name_typed_by_a_person_renames_a_service_named_file_but_never_a_file_a_person_named(
    shared: LiveServer, fresh_number
) -> None:  # type: ignore[no-untyped-def]
    number, other = fresh_number(), fresh_number()
    for who in (number, other):
        assert shared.admin("POST", f"/api/memory/{who}", json={"fact": "Has a cat"}).status_code == 200
    wait_until(lambda: settled(shared))
    key, other_key = key_for(number), key_for(other)
    old = shared.vault / f"callers/{key[:12]}.md"
    old.write_text(old.read_text().replace('name: ""', "name: Cy Moor"))
    mine = shared.vault / "callers/my own name for her.md"
    (shared.vault / f"callers/{other_key[:12]}.md").rename(mine)
    wait_until(lambda: settled(shared) and (shared.vault / "callers/Cy Moor.md").exists(), timeout=10)
    assert "\n# Cy Moor\n" in (shared.vault / "callers/Cy Moor.md").read_text()
    assert git(shared.vault, "log", "-1", "--format=%(trailers:key=Source,valueonly)").strip() == "hand-edit"
    # A name for the caller whose file a person named: the file keeps the person's name.
    mine.write_text(mine.read_text().replace('name: ""', "name: Di Vale"))
    wait_until(lambda: settled(shared) and frontmatter(mine).get("name") == "Di Vale", timeout=10)
    wait_until(lambda: shared.admin("GET", f"/api/callers/{other}").json()["frontmatter"]["name"] == "Di Vale")
    assert mine.exists() and not (shared.vault / "callers/Di Vale.md").exists()
    assert shared.admin("GET", f"/api/callers/{other}").json()["file"] == "callers/my own name for her.md"


def test_a_call_without_a_name_leaves_the_file_as_it_is(shared: LiveServer, fresh_number) -> None:  # type: ignore[no-untyped-def]
    number = fresh_number()
    deliver(shared, call_with_name(number, f"conv_{number[1:]}".ljust(33, "9"), None))
    wait_until(lambda: settled(shared))
    assert shared.admin("GET", f"/api/callers/{number}").json()["file"] == f"callers/{key_for(number)[:12]}.md"


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("Maria Lopez", "Maria Lopez"),
        ("  Maria \t Lopez ", "Maria Lopez"),
        ("../../etc/passwd", "etc passwd"),
        ('a/b\\c:d*e?f"g<h>i|j#k^l[m]n%o', "a b c d e f g h i j k l m n o"),
        (".hidden", "hidden"),
        ("...", ""),
        ("CON", "CON (caller)"),
        ("nul.txt", "nul.txt (caller)"),
        ("Zoë\u0000\u200b", "Zoë"),
        ("é" * 200, "é" * 60),
        ("Mr. Smith.", "Mr. Smith"),
    ],
)
def test_names_are_made_safe_for_every_file_system(name: str, stem: str) -> None:
    assert filenames.safe_name(name) == stem


@given(st.text(max_size=300))
def test_a_safe_name_never_leaves_the_folder_and_stays_bounded(name: str) -> None:
    stem = filenames.safe_name(name)
    assert "/" not in stem and "\\" not in stem and not stem.startswith(".") and "\x00" not in stem
    assert len(stem.encode()) <= filenames.MAX_NAME_BYTES + len(" (caller)")
    path = filenames.readable_path("callers/0123456789ab.md", name, lambda path: False)
    assert path is None if not stem else path == f"callers/{stem}.md"


def test_only_service_named_files_are_renamed_and_taken_names_are_skipped() -> None:
    taken = {"callers/maria lopez.md", "callers/maria lopez 2.md"}
    assert filenames.readable_path("callers/0123456789ab.md", "Maria Lopez", lambda p: p.casefold() in taken) == (
        "callers/Maria Lopez 3.md"
    )
    assert filenames.readable_path("callers/Maria.md", "Maria Lopez", lambda p: False) is None
    assert filenames.readable_path("callers/0123456789AB.md", "Maria Lopez", lambda p: False) is None
    assert filenames.readable_path("callers/sub/0123456789ab.md", "Maria Lopez", lambda p: False) is None


def test_the_generated_heading_follows_the_name_and_a_persons_heading_stays() -> None:
    text = '---\nphone_hash: "x"\nname: Ada\n---\n# Caller 0123456789ab\n\n## Facts\n'
    assert with_named_heading(text, "Ada  Quist") == '---\nphone_hash: "x"\nname: Ada\n---\n# Ada Quist\n\n## Facts\n'
    mine = text.replace("# Caller 0123456789ab", "# Our best customer")
    assert with_named_heading(mine, "Ada") == mine
    assert json.dumps(with_named_heading("", "Ada")) == '""'


def test_a_name_typed_on_a_laptop_renames_the_file_once_the_server_merges_it(tmp_path: Path, daemon: GitDaemon) -> None:
    url = daemon.bare()
    with running_server(tmp_path, GIT_REMOTE=url, SYNC_SECONDS="1") as server:
        number = "+14155550166"
        key = key_for(number)
        assert server.admin("POST", f"/api/memory/{number}", json={"fact": "Has a cat"}).status_code == 200
        head = git(server.vault, "rev-parse", "HEAD").strip()
        wait_until(
            lambda: head in run_git(daemon.base / "vault.git", "log", "--format=%H", "main", check=False).stdout,
            timeout=15,
        )
        laptop = Laptop.clone(url, tmp_path / "laptop")
        old = f"callers/{key[:12]}.md"
        text = laptop.read(old)
        laptop.write(old, text.replace('name: ""', "name: Eve Park"))
        laptop.commit_all("her name")
        assert laptop.push().returncode == 0
        wait_until(lambda: (server.vault / "callers/Eve Park.md").exists(), timeout=20, what="the rename")
        wait_until(lambda: settled(server), timeout=10)
        assert not (server.vault / old).exists()
        assert "\n# Eve Park\n" in (server.vault / "callers/Eve Park.md").read_text()
        assert server.admin("GET", f"/api/callers/{number}").json()["file"] == "callers/Eve Park.md"
        # The laptop gets the rename back with its next pull.
        renamed = git(server.vault, "rev-parse", "HEAD").strip()
        wait_until(
            lambda: renamed in run_git(daemon.base / "vault.git", "log", "--format=%H", "main", check=False).stdout,
            timeout=15,
        )
        assert laptop.pull().returncode == 0
        assert (laptop.path / "callers/Eve Park.md").exists() and not (laptop.path / old).exists()
