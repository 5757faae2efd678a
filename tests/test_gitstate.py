"""A person's git in the live vault (SPEC §11 "Never:"): no commit and no file write while a merge,
rebase or cherry-pick is in progress; acknowledged writes survive an abort.

Real git in a real vault served by the real server, with a bare repository standing in for the git
host and a clone of it for a person's laptop. The person runs git in the vault by hand, as a
person would, while writes, calls and hand edits keep arriving.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx

from server.gitstate import Operation, in_progress, state
from tests.conftest import (
    ADMIN_KEY,
    MARIA,
    OTHER,
    WEBHOOK_SECRET,
    LiveServer,
    commits_since,
    elevenlabs_signature,
    git,
    run_cli,
    vault_head,
)
from tests.live_helpers import MARIA_KEY, OTHER_KEY, caller_md, frontmatter, preview, prompt_of, request, wait_until
from tests.test_app_postcall import encode, payload
from tests.test_watcher import health, settled

MARIA_FILE = "callers/maria.md"
OTHER_FILE = f"callers/{OTHER_KEY[:12]}.md"
FACTS = ["Prefers morning appointments", "Has a dog named Rex"]
SERVICE_FACT = "Moved to Elm Street"  # written through the API, committed by the service
LAPTOP_FACT = "Moved to Oak Avenue"  # written on a laptop at the same place, pushed to the remote
# A line opening or closing a block of git's conflict markers, in a file's text or in `git log -p`
# (after its +/-/space column). `=======` alone is not looked for: it is a heading underline too.
MARKER = re.compile(r"^[ +-]?(<{7}|>{7})( |$)", re.MULTILINE)
# Longer than the hand-edit quiet period (0.3 s) and several polls of the `.git` files (75 ms).
WHILE = 1.5


def person(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """git as a person runs it in a folder: their own name, no global config of this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_EDITOR": "true"})
    identity = ("-c", "user.name=Pat Person", "-c", "user.email=pat@example.com", "-c", "advice.mergeConflict=false")
    proc = subprocess.run(["git", "-C", str(cwd), *identity, *args], env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
    return proc


def diverged(server: LiveServer, tmp_path: Path) -> Path:
    """Maria's file on a remote and a laptop; the laptop pushes a fact, the service commits another at the same place.

    Returns the laptop's clone. The vault's branch is then one service commit ahead of the remote's,
    and one behind: a person's pull, rebase or cherry-pick of it stops on a conflict in Maria's file.
    """
    vault = server.vault
    (vault / MARIA_FILE).write_text(caller_md(MARIA, facts=FACTS), encoding="utf-8")
    wait_until(lambda: preview(server, MARIA) and settled(server), what="Maria's file to be indexed and committed")
    # git's own text merge for every file, whatever merge driver the vault may have one day: a person
    # meets conflict markers anyway (a laptop without the driver, `git stash pop`, a cherry-pick).
    (vault / ".git" / "info").mkdir(exist_ok=True)
    (vault / ".git" / "info" / "attributes").write_text("* merge=text\n", encoding="utf-8")
    remote = tmp_path / "remote.git"
    person(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    person(vault, "remote", "add", "origin", remote.as_uri())
    person(vault, "push", "-q", "origin", "main")
    laptop = tmp_path / "laptop"
    person(tmp_path, "clone", "-q", remote.as_uri(), str(laptop))
    (laptop / MARIA_FILE).write_text(caller_md(MARIA, facts=[*FACTS, LAPTOP_FACT]), encoding="utf-8")
    person(laptop, "commit", "-q", "-am", "Maria moved (from the laptop)")
    person(laptop, "push", "-q", "origin", "main")
    response = server.admin("POST", f"/api/memory/{MARIA}", json={"fact": SERVICE_FACT})
    assert response.status_code == 200, response.text
    assert (vault / MARIA_FILE).read_text(encoding="utf-8") == caller_md(MARIA, facts=[*FACTS, SERVICE_FACT])
    wait_until(lambda: settled(server), what="the fact to be committed")
    return laptop


def marker_line(text: str) -> int:
    """The line number (from 1) of the first `<<<<<<<` line."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith("<<<<<<< "))


def no_marker_in_history(vault: Path) -> None:
    history = git(vault, "log", "--all", "-p", "--format=commit %H")
    assert MARKER.search(history) is None, "a conflict marker reached the vault's history"


def in_background(pool: ThreadPoolExecutor, send: Callable[[], httpx.Response]) -> Future[tuple[httpx.Response, float]]:
    """Send a request from another thread; its future gives the answer and when it arrived (monotonic)."""

    def timed() -> tuple[httpx.Response, float]:
        response = send()
        return response, time.monotonic()

    return pool.submit(timed)


def api_fact(server: LiveServer, number: str, fact: str) -> Callable[[], httpx.Response]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    return lambda: httpx.post(f"{server.url}/api/memory/{number}", json={"fact": fact}, headers=headers, timeout=60)


def only_sources(vault: Path, since: str) -> list[str]:
    return sorted(message.splitlines()[-1] for message in commits_since(vault, since))


# -- reading the state from .git ---------------------------------------------------------------------


def test_each_operation_is_read_from_the_git_folder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    person(tmp_path, "init", "-q", "-b", "main", str(repo))
    (repo / "a.md").write_text("one\n", encoding="utf-8")
    person(repo, "add", "a.md")
    person(repo, "commit", "-q", "-m", "one")
    person(repo, "switch", "-q", "-c", "side")
    (repo / "a.md").write_text("side\n", encoding="utf-8")
    person(repo, "commit", "-q", "-am", "side")
    person(repo, "switch", "-q", "main")
    (repo / "a.md").write_text("main\n", encoding="utf-8")
    person(repo, "commit", "-q", "-am", "main")
    assert in_progress(repo) is None and state(repo) is None

    (repo / "a.md").write_text("later\n", encoding="utf-8")
    person(repo, "commit", "-q", "-am", "later")
    assert in_progress(repo) is None and state(repo) is None

    begun = time.time()
    for start, abort, operation in (
        (("merge", "side"), ("merge", "--abort"), Operation.MERGE),
        (("rebase", "side"), ("rebase", "--abort"), Operation.REBASE),
        (("cherry-pick", "side"), ("cherry-pick", "--abort"), Operation.CHERRY_PICK),
        (("revert", "--no-edit", "HEAD~1"), ("revert", "--abort"), Operation.REVERT),
    ):
        assert person(repo, *start, check=False).returncode != 0, start
        assert in_progress(repo) is operation, start
        found = state(repo)
        assert found is not None and found.operation is operation
        assert begun - 2 <= found.since <= time.time() + 1
        person(repo, *abort)
        assert in_progress(repo) is None and state(repo) is None

    # A rebase that stops for an edit, HEAD detached: the same.
    person(repo, "-c", "sequence.editor=sed -i s/^pick/edit/", "rebase", "-q", "-i", "HEAD~1")
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "HEAD"
    assert in_progress(repo) is Operation.REBASE
    person(repo, "rebase", "--abort")
    assert in_progress(repo) is None


# -- the live vault ----------------------------------------------------------------------------------


def test_a_pull_stopped_on_a_conflict_is_left_to_the_person_and_then_committed_on(
    server_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = server_factory()
    vault = server.vault
    diverged(server, tmp_path)
    head = vault_head(vault)

    pulled = person(vault, "-c", "pull.rebase=false", "pull", "origin", "main", check=False)
    assert pulled.returncode == 1 and f"CONFLICT (content): Merge conflict in {MARIA_FILE}" in pulled.stdout
    marked = (vault / MARIA_FILE).read_text(encoding="utf-8")
    assert f"<<<<<<< HEAD\n- {SERVICE_FACT}\n=======\n- {LAPTOP_FACT}\n>>>>>>> " in marked
    error = f"has conflict markers (line {marker_line(marked)}): resolve the merge"
    status = wait_until(lambda: (h := health(server))["errors"] and h, timeout=3, what="/health to list the file")
    assert status["status"] == "degraded"
    assert status["errors"] == {MARIA_FILE: error}
    assert status["git_operation"]["operation"] == "merge"
    assert time.time() - 30 < status["git_operation"]["since"] <= time.time()
    assert status["git_operation"]["detail"].endswith("commit the resolved files, or run `git merge --abort`")

    # Calls are answered from the last good version, and recorded later.
    answer = server.personalize(request(MARIA))
    assert answer.status_code == 200
    prompt = prompt_of(answer.json())
    assert SERVICE_FACT in prompt and LAPTOP_FACT not in prompt and "<<<<<<<" not in prompt
    assert answer.json()["dynamic_variables"]["call_count"] == 3

    with ThreadPoolExecutor(2) as pool:
        fact = in_background(pool, api_fact(server, OTHER, "Likes jazz"))
        time.sleep(WHILE)
        assert not fact.done(), "a write during the merge is not acknowledged"
        assert vault_head(vault) == head, "nothing is committed during the merge"
        assert (vault / ".git" / "MERGE_HEAD").exists()
        assert not (vault / OTHER_FILE).exists(), "the write waits before it touches a file"
        assert (vault / MARIA_FILE).read_text(encoding="utf-8") == marked, "the call is not recorded into it yet"
        status = health(server)
        assert status["status"] == "degraded" and status["pending_calls"] == 1
        assert status["git_operation"]["waiting_writes"] >= 2  # the API write and the recorded call
        assert MARKER.search(git(vault, "diff", "--cached")) is None, "nothing of the service's was staged"

        resolved = caller_md(MARIA, facts=[*FACTS, SERVICE_FACT, LAPTOP_FACT])
        (vault / MARIA_FILE).write_text(resolved, encoding="utf-8")
        person(vault, "add", MARIA_FILE)
        person(vault, "commit", "-q", "--no-edit")
        merge = vault_head(vault)
        response, _ = fact.result(timeout=30)

    assert response.status_code == 200, response.text
    wait_until(lambda: settled(server), timeout=10, what="the waiting write and call to be committed")
    # The person's merge commit, with both parents, is in the branch's history under the service's commits.
    assert git(vault, "rev-list", "--parents", "-n", "1", merge).split()[1:] == [
        head,
        git(vault, "rev-parse", "origin/main").strip(),
    ]
    person(vault, "merge-base", "--is-ancestor", merge, "HEAD")
    assert f"fact for {OTHER_KEY[:12]}\n\nSource: api" in commits_since(vault, merge)
    assert git(vault, "show", f"HEAD:{MARIA_FILE}") == (vault / MARIA_FILE).read_text(encoding="utf-8")
    assert frontmatter(vault / MARIA_FILE)["call_count"] == 4
    assert (vault / MARIA_FILE).read_text(encoding="utf-8").split("---\n", 2)[2] == resolved.split("---\n", 2)[2]
    no_marker_in_history(vault)
    final = health(server)
    assert final["status"] == "ok" and final["errors"] == {} and final["git_operation"] is None
    assert LAPTOP_FACT in prompt_of(preview(server, MARIA) or {})


def test_writes_sent_during_a_rebase_that_is_aborted_are_all_kept(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory()
    vault = server.vault
    diverged(server, tmp_path)
    branch = git(vault, "rev-parse", "main").strip()
    person(vault, "fetch", "-q", "origin")
    rebased = person(vault, "rebase", "origin/main", check=False)
    assert rebased.returncode != 0 and (vault / ".git" / "rebase-merge").is_dir()
    detached = vault_head(vault)
    assert detached == git(vault, "rev-parse", "origin/main").strip()
    wait_until(lambda: health(server)["errors"], timeout=3, what="the conflicted file on /health")

    conversation = "conv_during_rebase_0001"
    summary = "Asked whether the clinic is open on Saturday."
    body = encode(
        payload(
            {
                "data.conversation_id": conversation,
                "data.analysis.transcript_summary": summary,
                "data.metadata.start_time_unix_secs": int(time.time()),
            }
        )
    )

    def post_call() -> httpx.Response:
        headers = {"content-type": "application/json", "elevenlabs-signature": elevenlabs_signature(body)}
        return httpx.post(f"{server.url}/webhook/post-call", content=body, headers=headers, timeout=60)

    def tool() -> httpx.Response:
        fact = {"fact": "Takes her coffee black", "caller_id": MARIA, "called_number": "+14155550199"}
        headers = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
        return httpx.post(f"{server.url}/tools/remember", json=fact, headers=headers, timeout=60)

    # A post-call event is held durably in the inbox and answered at once (SPEC §13); it is written
    # once the rebase has ended, like the rest.
    held = post_call()
    assert held.status_code == 200 and held.json()["status"] == "held", held.text
    with ThreadPoolExecutor(4) as pool:
        sent = [
            in_background(pool, api_fact(server, MARIA, "Is learning Portuguese")),
            in_background(pool, api_fact(server, OTHER, "Likes jazz")),
            in_background(pool, tool),
        ]
        time.sleep(WHILE)
        assert not any(future.done() for future in sent), "nothing else is acknowledged during the rebase"
        assert health(server)["inbox_held"] == 1
        assert vault_head(vault) == detached and git(vault, "rev-parse", "main").strip() == branch
        assert not (vault / OTHER_FILE).exists()
        status = health(server)
        assert status["status"] == "degraded" and status["git_operation"]["operation"] == "rebase"
        assert status["git_operation"]["waiting_writes"] >= 3
        aborted = time.monotonic()
        person(vault, "rebase", "--abort")
        answers = [future.result(timeout=30) for future in sent]

    for response, arrived in answers:
        assert response.status_code == 200, response.text
        assert arrived > aborted, "acknowledged only once it could be committed, after the abort"
    assert [response.json()["status"] for response, _ in answers] == ["saved"] * 3
    wait_until(lambda: settled(server), timeout=10, what="everything to be committed")
    assert git(vault, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    person(vault, "merge-base", "--is-ancestor", branch, "HEAD")
    maria = (vault / MARIA_FILE).read_text(encoding="utf-8")
    other = (vault / OTHER_FILE).read_text(encoding="utf-8")
    history = git(vault, "log", "-p", "main", "--format=")
    for line, text in (
        (f"- {SERVICE_FACT}", maria),
        ("- Is learning Portuguese", maria),
        ("- Takes her coffee black", maria),
        ("- Likes jazz", other),
    ):
        assert line in text.splitlines(), line
        assert f"\n+{line}\n" in history, line
    call_line = next(line for line in maria.splitlines() if line.endswith(f"({conversation})"))
    assert summary in call_line and f"\n+{call_line}\n" in history
    assert git(vault, "status", "--porcelain") == ""
    no_marker_in_history(vault)


def test_a_cherry_pick_in_progress_holds_commits_and_a_write_gives_up_after_its_wait(
    server_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(GIT_WAIT_SECONDS="1")
    vault = server.vault
    diverged(server, tmp_path)
    head = vault_head(vault)
    person(vault, "fetch", "-q", "origin")
    assert person(vault, "cherry-pick", "origin/main", check=False).returncode != 0
    assert (vault / ".git" / "CHERRY_PICK_HEAD").exists()

    note = vault / "notes" / "2026-12-01.md"
    note.write_text("# 2026-12-01\n\nThe office closes at noon.\n", encoding="utf-8")  # a hand edit
    assert server.personalize(request(OTHER)).status_code == 200  # a new caller's call, to be recorded
    started = time.monotonic()
    refused = server.admin("POST", f"/api/memory/{MARIA}", json={"fact": "Is learning Portuguese"})
    waited = time.monotonic() - started
    assert refused.status_code == 503
    detail = refused.json()["detail"]
    assert detail.startswith("not saved: a git cherry-pick is in progress in the vault (since ")
    assert detail.endswith("): commit the resolved files, or run `git cherry-pick --abort`; then try again")
    assert 1.0 <= waited < 5.0
    assert "Is learning Portuguese" not in (vault / MARIA_FILE).read_text(encoding="utf-8")
    doctor = run_cli(vault, "doctor")
    assert " fix  a git cherry-pick is in progress in the vault (since " in doctor.stdout
    assert "until then the service commits nothing and holds its writes" in doctor.stdout
    time.sleep(WHILE)
    assert vault_head(vault) == head, "neither the hand edit nor the recorded call is committed meanwhile"
    assert not (vault / OTHER_FILE).exists()

    person(vault, "cherry-pick", "--abort")
    wait_until(lambda: settled(server), timeout=10, what="the held commits")
    assert only_sources(vault, head) == ["Source: hand-edit", "Source: webhook"]
    assert git(vault, "show", "HEAD:notes/2026-12-01.md") == note.read_text(encoding="utf-8")
    assert frontmatter(vault / OTHER_FILE)["call_count"] == 1
    assert "Is learning Portuguese" not in git(vault, "log", "-p", "--format=")
    no_marker_in_history(vault)


def test_the_service_starts_during_a_merge_and_commits_nothing_until_it_ends(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory()
    vault = server.vault
    diverged(server, tmp_path)
    server.stop()
    head = vault_head(vault)
    assert person(vault, "-c", "pull.rebase=false", "pull", "origin", "main", check=False).returncode == 1
    (vault / "callers" / "offline.md").write_text(caller_md(OTHER, name="Olga"), encoding="utf-8")

    server.start()
    assert server.personalize(request(OTHER)).json()["dynamic_variables"]["caller_name"] == "Olga"
    time.sleep(WHILE)
    assert vault_head(vault) == head, "start-up commits nothing during the merge"
    status = health(server)
    assert status["git_operation"]["operation"] == "merge" and list(status["errors"]) == [MARIA_FILE]

    person(vault, "merge", "--abort")
    wait_until(lambda: settled(server), timeout=10, what="the files changed while stopped to be committed")
    assert only_sources(vault, head) == ["Source: hand-edit", "Source: webhook"]
    assert git(vault, "show", "HEAD:callers/offline.md").startswith("---\n")
    assert frontmatter(vault / "callers" / "offline.md")["call_count"] == 4
    assert MARIA_KEY not in git(vault, "log", "--format=%B", f"{head}..HEAD")
    no_marker_in_history(vault)
