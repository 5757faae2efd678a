"""gitwriter.py: one serialized writer, grouped commits, identity from config, lock recovery (SPEC §3).

Real repositories in temp dirs and the real git binary throughout.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from server import gitstage, gitwriter
from server.gitcommit import MAX_LISTED, message
from server.gitlock import ServerMark
from server.gitrun import GitError
from server.gitwriter import GitWriter
from server.service import open_service
from server.worker import Worker
from tests.conftest import argument_bytes, git, make_settings

AUTHOR = ("Front Desk Bot", "desk@example.test")


def make_repo(root: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> GitWriter:
    root.mkdir(parents=True, exist_ok=True)
    writer = GitWriter(root, *AUTHOR)
    assert writer.ensure_repo() is True
    assert writer.ensure_repo() is False
    assert writer.head() is None
    (root / "soul.md").write_text("Be kind.\n")
    assert writer.commit_sync(["soul.md"], ["create the vault"], "cli")
    return writer


def write(root: Path, relpath: str, text: str) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def count(root: Path) -> int:
    return int(git(root, "rev-list", "--count", "HEAD").strip())


def assert_clean(root: Path) -> None:
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    git(root, "fsck", "--no-progress")  # check=True: a corrupt repository fails here


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, GitWriter]:
    root = tmp_path / "vault"
    return root, make_repo(root)


@pytest.mark.anyio
async def test_commit_author_source_trailer_and_one_commit_per_call(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    await writer.start()
    try:
        before = count(root)
        shas = []
        for i, source in enumerate(["api", "webhook", "tool", "cli", "hand-edit"]):
            write(root, f"callers/{i}.md", f"caller {i}\n")
            sha = await writer.commit([f"callers/{i}.md"], f"fact for {i:012x}", source)
            assert sha is not None
            assert git(root, "rev-parse", "HEAD").strip() == sha
            assert git(root, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip() == (
                "Front Desk Bot <desk@example.test>|Front Desk Bot <desk@example.test>"
            )
            body = git(root, "log", "-1", "--format=%B")
            assert body.startswith(f"fact for {i:012x}\n")
            assert git(root, "log", "-1", "--format=%(trailers:key=Source,valueonly)").strip() == source
            assert body.rstrip("\n").splitlines()[-1] == f"Source: {source}"
            shas.append(sha)
        assert count(root) == before + 5
        assert len(set(shas)) == 5
        assert writer.status.last_commit == shas[-1]
        assert writer.status.last_error is None
        assert writer.status.pending == 0
        assert_clean(root)
    finally:
        await writer.stop()


@pytest.mark.anyio
async def test_no_global_identity_and_hostile_home_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Someone Else")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "someone@else.test")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "not-this-repo"))
    root = tmp_path / "vault"
    writer = make_repo(root)
    # A global config that would break or change commits, were it read.
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Wrong\n\temail = wrong@x\n\tuseConfigOnly = true\n[commit]\n\tgpgsign = true\n"
        "[core]\n\thooksPath = /nonexistent\n"
    )
    await writer.start()
    try:
        write(root, "callers/a.md", "a\n")
        sha = await writer.commit(["callers/a.md"], "fact for aaaaaaaaaaaa", "api")
        assert sha is not None
    finally:
        await writer.stop()
    assert (
        git(root, "log", "--format=%an <%ae> %cn <%ce>").strip().splitlines()
        == ["Front Desk Bot <desk@example.test> Front Desk Bot <desk@example.test>"] * 2
    )
    assert not (tmp_path / "not-this-repo").exists()
    assert_clean(root)


@pytest.mark.anyio
async def test_default_identity_with_an_empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "empty-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    root = tmp_path / "vault"
    root.mkdir()
    writer = GitWriter(root, "memory-bridge", "memory-bridge@localhost")
    writer.ensure_repo()
    for name in ("soul.md", "callers/.gitkeep", "notes/.gitkeep", ".gitignore"):
        write(root, name, "x\n")
    assert writer.commit_sync(["."], ["create the vault"], "cli")  # as start-up does
    assert_clean(root)
    await writer.start()
    try:
        write(root, "callers/a.md", "a\n")
        assert await writer.commit(["callers/a.md"], "fact for aaaaaaaaaaaa", "api")
    finally:
        await writer.stop()
    assert (
        git(root, "log", "--format=%an <%ae>|%cn <%ce>").splitlines()
        == ["memory-bridge <memory-bridge@localhost>|memory-bridge <memory-bridge@localhost>"] * 2
    )
    assert git(root, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert list(home.iterdir()) == []  # nothing written to the home directory either
    assert_clean(root)


@pytest.mark.anyio
async def test_concurrent_commits_are_grouped_and_nothing_is_lost(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    n = 50
    before = count(root)
    await writer.start()
    try:
        for i in range(n):
            write(root, f"callers/c{i:02d}.md", f"caller {i}\n")
        results = await asyncio.gather(
            *(writer.commit([f"callers/c{i:02d}.md"], f"fact for c{i:02d}", "api") for i in range(n))
        )
    finally:
        await writer.stop()
    commits = count(root) - before
    assert 1 <= commits < n
    assert all(sha is not None for sha in results)
    assert writer.status.pending == 0
    tracked = set(git(root, "ls-files").split())
    assert {f"callers/c{i:02d}.md" for i in range(n)} <= tracked
    log = git(root, "log", f"-{commits}", "--format=%B%x00")
    for i in range(n):
        assert f"fact for c{i:02d}" in log
    assert log.count("Source: api") == commits
    # Each caller's own answer is a commit that holds that caller's file.
    for i, sha in enumerate(results):
        assert sha is not None
        assert f"callers/c{i:02d}.md" in git(root, "show", "--name-only", "--format=", sha).split()
    assert_clean(root)


@pytest.mark.anyio
async def test_grouped_commit_message_lists_each_change(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    await writer.start()
    try:
        for name in "abc":
            write(root, f"callers/{name}.md", name)
        results = await asyncio.gather(
            writer.commit(["callers/a.md"], "fact for aaaaaaaaaaaa", "tool"),
            writer.commit(["callers/b.md"], ["fact for bbbbbbbbbbbb", "call from bbbbbbbbbbbb"], "tool"),
            writer.commit(["callers/c.md"], "fact for aaaaaaaaaaaa", "tool"),  # a second change: listed again
        )
    finally:
        await writer.stop()
    assert len(set(results)) == 1  # queued together, committed together
    body = git(root, "log", "-1", "--format=%B").rstrip("\n")
    assert body == (
        "4 changes\n\n- fact for aaaaaaaaaaaa\n- fact for bbbbbbbbbbbb\n- call from bbbbbbbbbbbb\n"
        "- fact for aaaaaaaaaaaa\n\nSource: tool"
    )


@pytest.mark.anyio
async def test_sources_are_never_mixed_in_one_commit(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    await writer.start()
    try:
        jobs = []
        for i in range(10):
            source = "api" if i % 2 else "webhook"
            write(root, f"callers/{i}.md", str(i))
            jobs.append(writer.commit([f"callers/{i}.md"], f"{source} change {i}", source))
        results = await asyncio.gather(*jobs)
    finally:
        await writer.stop()
    for i, sha in enumerate(results):
        source = "api" if i % 2 else "webhook"
        assert git(root, "log", "-1", "--format=%(trailers:key=Source,valueonly)", str(sha)).strip() == source
        message_ = git(root, "log", "-1", "--format=%B", str(sha))
        assert f"{source} change {i}" in message_
        other = "webhook" if source == "api" else "api"
        assert f"{other} change" not in message_
    assert_clean(root)


@pytest.mark.anyio
async def test_stale_index_lock_is_recovered(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    lock = root / ".git" / "index.lock"
    lock.write_text("")
    old = time.time() - 10
    os.utime(lock, (old, old))
    write(root, "callers/a.md", "a\n")
    await writer.start()
    try:
        sha = await asyncio.wait_for(writer.commit(["callers/a.md"], "fact for aaaaaaaaaaaa", "api"), 10)
    finally:
        await writer.stop()
    assert sha is not None
    assert not lock.exists()
    assert writer.runner.lock_recoveries == 1
    assert "callers/a.md" in git(root, "ls-files")
    assert_clean(root)


def test_stale_index_lock_is_recovered_by_commit_sync(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    lock = root / ".git" / "index.lock"
    lock.write_text("")
    old = time.time() - 10
    os.utime(lock, (old, old))
    write(root, "callers/a.md", "a\n")
    assert writer.commit_sync(["callers/a.md"], ["fact for aaaaaaaaaaaa"], "cli")
    assert not lock.exists()
    assert_clean(root)


def test_a_lock_left_by_a_crash_is_gone_after_start_up_even_with_nothing_to_commit(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    open_service(make_settings(root))
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    lock = root / ".git" / "index.lock"
    lock.write_text("")  # fresh, as a git killed a moment ago leaves it
    started = time.monotonic()
    open_service(make_settings(root))
    assert not lock.exists()
    assert time.monotonic() - started >= 1.5, "a fresh lock is waited on until it is stale, not taken at once"


def test_a_merge_of_the_running_server_is_left_alone_by_the_cli_and_undone_after_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    open_service(make_settings(root))
    me = ("-c", "user.name=Server", "-c", "user.email=server@example.test")
    branch = git(root, "branch", "--show-current").strip()

    def commit_plain(text: str) -> None:
        (root / "plain.txt").write_text(text)
        git(root, "add", "plain.txt")
        git(root, *me, "commit", "-q", "--no-verify", "-m", "plain.txt")

    git(root, "checkout", "-q", "-b", "other")
    commit_plain("theirs\n")
    git(root, "checkout", "-q", branch)
    commit_plain("ours\n")
    with pytest.raises(subprocess.CalledProcessError):
        git(root, *me, "merge", "other")  # conflicts: half done, as the server's own merge is mid-way
    mark = root / ".git" / "memory-bridge" / "merging"
    mark.touch()

    server = ServerMark(root)
    server.claim()  # a server is running: the CLI opens the vault beside it
    try:
        open_service(make_settings(root))
    finally:
        server.release()
    assert (root / ".git" / "MERGE_HEAD").exists(), "the running server's merge was aborted under it"
    assert mark.exists()

    open_service(make_settings(root))  # no server: it was killed mid-merge, and this start undoes it
    assert not (root / ".git" / "MERGE_HEAD").exists()
    assert not mark.exists()
    assert (root / "plain.txt").read_text() == "ours\n"


def test_a_lock_a_live_git_lets_go_of_at_start_up_is_not_counted_as_recovered(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    lock = root / ".git" / "index.lock"
    lock.write_text("")
    threading.Timer(0.3, lock.unlink).start()
    writer.runner.settle_lock()
    assert not lock.exists()
    assert writer.runner.lock_recoveries == 0


@pytest.mark.anyio
async def test_a_live_lock_is_waited_for_not_stolen(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    lock = root / ".git" / "index.lock"
    lock.write_text("")  # fresh: some other git is working right now
    write(root, "callers/a.md", "a\n")
    await writer.start()
    try:
        asyncio.get_running_loop().call_later(0.4, lock.unlink)
        started = time.monotonic()
        sha = await asyncio.wait_for(writer.commit(["callers/a.md"], "fact for aaaaaaaaaaaa", "api"), 10)
        waited = time.monotonic() - started
    finally:
        await writer.stop()
    assert sha is not None
    assert waited >= 0.35
    assert writer.runner.lock_recoveries == 0
    assert_clean(root)


@pytest.mark.anyio
async def test_deletion_is_committed(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    await writer.start()
    try:
        write(root, "callers/gone.md", "bye\n")
        write(root, "callers/stays.md", "hi\n")
        await writer.commit(["callers/gone.md", "callers/stays.md"], "two callers", "api")
        (root / "callers" / "gone.md").unlink()
        sha = await writer.commit(["callers/gone.md"], "forget caller 000000000000", "api")
    finally:
        await writer.stop()
    assert sha is not None
    assert git(root, "show", "--name-status", "--format=", sha).split() == ["D", "callers/gone.md"]
    tracked = git(root, "ls-files").split()
    assert "callers/gone.md" not in tracked
    assert "callers/stays.md" in tracked
    assert_clean(root)


@pytest.mark.anyio
async def test_nothing_to_commit_returns_none(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    before = git(root, "rev-parse", "HEAD")
    await writer.start()
    try:
        assert await writer.commit(["soul.md"], "nothing changed", "api") is None
        assert await writer.commit(["callers/never-existed.md"], "nothing here", "api") is None
    finally:
        await writer.stop()
    assert git(root, "rev-parse", "HEAD") == before
    assert writer.status.last_error is None
    assert writer.status.pending == 0
    assert writer.commit_sync(["soul.md"], ["nothing"], "cli") is None


@pytest.mark.anyio
async def test_a_git_failure_is_loud_and_nothing_is_lost(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    index = root / ".git" / "index"
    good_index = index.read_bytes()
    index.write_bytes(b"DIRC garbage, not an index")  # every git command that reads it now fails
    write(root, "callers/a.md", "a\n")
    await writer.start()
    try:
        with pytest.raises(GitError):
            await writer.commit(["callers/a.md"], "fact for aaaaaaaaaaaa", "api")
        assert writer.status.last_error
        assert writer.alive
        assert writer.status.pending == 0
        assert (root / "callers" / "a.md").read_text() == "a\n"  # the file change stays on disk
        index.write_bytes(good_index)
        write(root, "callers/b.md", "b\n")
        sha = await writer.commit(["callers/b.md"], "fact for bbbbbbbbbbbb", "api")
        assert sha is not None
        assert writer.status.last_error is None
    finally:
        await writer.stop()
    # The failed change was committed with the next one that succeeded.
    assert {"callers/a.md", "callers/b.md"} <= set(git(root, "ls-files").split())
    assert_clean(root)


@pytest.mark.anyio
@pytest.mark.parametrize("many", [False, True], ids=["git add", "update-index"])
async def test_a_path_the_vault_ignores_is_skipped_and_never_blocks_later_commits(
    repo: tuple[Path, GitWriter], monkeypatch: pytest.MonkeyPatch, many: bool
) -> None:
    root, writer = repo
    if many:  # as a commit of many files stages them
        monkeypatch.setattr(gitstage, "_ADD_MAX_PATHS", 0)
    write(root, ".gitignore", "callers/private/\ncallers/*.draft.md\n")
    write(root, "callers/private/secret.md", "not for git\n")
    write(root, "callers/x.draft.md", "not for git either\n")
    write(root, "callers/a.md", "a\n")
    await writer.start()
    try:
        paths = ["callers/private/secret.md", "callers/x.draft.md", "callers/a.md"]
        sha = await writer.commit(paths, "three files", "hand-edit")
        assert sha is not None
        assert writer.status.last_error is None
        write(root, "callers/b.md", "b\n")
        assert await writer.commit(["callers/b.md"], "fact for bbbbbbbbbbbb", "api") is not None
    finally:
        await writer.stop()
    tracked = set(git(root, "ls-files").split())
    assert {"callers/a.md", "callers/b.md"} <= tracked
    assert "callers/private/secret.md" not in tracked and "callers/x.draft.md" not in tracked
    assert writer.commit_sync(["callers/private/secret.md"], ["ignored"], "cli") is None


@pytest.mark.anyio
async def test_file_names_are_literal_not_patterns(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    names = ["callers/x.md", "callers/y.md", "callers/*.md", "callers/[xy].md", "callers/Maria López.md"]
    await writer.start()
    try:
        for name in names:
            write(root, name, name)
        await writer.commit(names, "callers with odd names", "hand-edit")
        assert set(git(root, "ls-files", "-z").split("\0")) >= set(names)
        (root / "callers" / "*.md").unlink()
        write(root, "callers/[xy].md", "changed")
        write(root, "callers/x.md", "a hand edit in progress")  # matched by the pattern `[xy].md`
        sha = await writer.commit(["callers/*.md", "callers/[xy].md"], "one removed, one changed", "api")
    finally:
        await writer.stop()
    assert sorted(git(root, "show", "--name-only", "-z", "--format=", str(sha)).strip("\0").split("\0")) == [
        "callers/*.md",
        "callers/[xy].md",
    ]
    tracked = set(git(root, "ls-files", "-z").split("\0"))
    assert {"callers/x.md", "callers/y.md", "callers/Maria López.md"} <= tracked
    assert git(root, "status", "--porcelain", "-z").split("\0")[0] == " M callers/x.md"  # not committed as "api"


@pytest.mark.anyio
async def test_commit_needs_a_known_source_and_a_running_writer(repo: tuple[Path, GitWriter]) -> None:
    _root, writer = repo
    with pytest.raises(RuntimeError):
        await writer.commit(["soul.md"], "x", "api")
    await writer.start()
    try:
        assert writer.alive
        with pytest.raises(ValueError):
            await writer.commit(["soul.md"], "x", "someone")
    finally:
        await writer.stop()
    assert not writer.alive


@pytest.mark.anyio
async def test_stop_commits_what_is_queued(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    await writer.start()
    for i in range(5):
        write(root, f"callers/{i}.md", str(i))
    tasks = [asyncio.create_task(writer.commit([f"callers/{i}.md"], f"c{i}", "cli")) for i in range(5)]
    await asyncio.sleep(0)  # let them queue
    await writer.stop()
    assert all(t.done() and t.result() for t in tasks)
    assert_clean(root)


def test_dirty_paths(repo: tuple[Path, GitWriter]) -> None:
    root, writer = repo
    assert writer.dirty_paths() == []
    write(root, "callers/new one.md", "new")
    write(root, "notes/2026-11-25.md", "n")
    write(root, "soul.md", "changed\n")
    assert sorted(writer.dirty_paths()) == ["callers/new one.md", "notes/2026-11-25.md", "soul.md"]
    assert writer.commit_sync(writer.dirty_paths(), ["hand edits"], "hand-edit")
    assert writer.dirty_paths() == []
    # A staged rename lists both paths.
    git(root, "mv", "soul.md", "soul-old.md")
    assert sorted(writer.dirty_paths()) == ["soul-old.md", "soul.md"]


def test_message() -> None:
    assert message(["fact for abcdefabcdef"], "api") == "fact for abcdefabcdef\n\nSource: api\n"
    assert message(["a", "b"], "webhook") == "2 changes\n\n- a\n- b\n\nSource: webhook\n"


def test_a_message_lists_a_bounded_number_of_changes_and_counts_the_rest() -> None:
    listed = [f"- change {n}" for n in range(MAX_LISTED)]
    text = message([f"change {n}" for n in range(100_000)], "hand-edit")
    assert text == "\n".join(
        ["100000 changes", "", *listed, f"- ... and {100_000 - MAX_LISTED} more", "", "Source: hand-edit", ""]
    )
    # Changes carried without a line of their own (a failed commit's) are counted too.
    assert message(["a"], "api", more=5).startswith("6 changes\n\n- a\n- ... and 5 more\n\nSource: api")


# Ten thousand files under a lowered stack limit (`small_argument_room`) overflow a command line the
# way a hundred thousand do on a default machine: the same proof, at a tenth of the time.
MANY = 10_000


def write_many(root: Path, count: int, folder: str = "callers") -> list[str]:
    """`count` small files under `folder`, written as a sync tool or a person's script would."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    paths = [f"{folder}/c{n:06d}.md" for n in range(count)]
    for path in paths:
        with open(root / path, "w") as file:
            file.write(f"# caller {path}\n")
    return paths


@pytest.mark.slow(seconds=2)
@pytest.mark.anyio
async def test_a_failed_commit_of_many_files_leaves_the_writer_able_to_commit(
    tmp_path: Path, small_argument_room: int
) -> None:
    # A script changed every file of a big vault while another git held the branch's ref lock: the
    # hand-edit commit of all of them fails. The next write commits them all, and so does the writer
    # after it, at once and with a message of bounded size: no command line or message grows with
    # the number of files (the kernel's argument limit is far below their paths).
    root = tmp_path / "vault"
    writer = make_repo(root)
    paths = write_many(root, MANY)
    assert argument_bytes(paths) > small_argument_room, "the paths would fit on one command line"
    lock = root / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("")
    worker = Worker()
    await worker.start()
    await writer.start(worker)  # as the server runs it: git started by the worker process
    try:
        head = git(root, "rev-parse", "HEAD")
        with pytest.raises(GitError, match=r"main\.lock"):
            await writer.commit_hand_edits(dict.fromkeys(paths, "edited"))
        assert writer.status.last_error and git(root, "rev-parse", "HEAD") == head
        lock.unlink()

        write(root, "callers/a.md", "a\n")
        assert await writer.commit(["callers/a.md"], "fact for aaaaaaaaaaaa", "api") is not None
        body = git(root, "log", "-1", "--format=%B")
        assert body.startswith(
            f"{MANY + 1} changes\n\n- fact for aaaaaaaaaaaa\n- hand edit: callers/c000000.md edited (commit retried)\n"
        )
        assert f"\n- ... and {MANY + 1 - MAX_LISTED} more\n\nSource: api\n" in body
        assert len(body.splitlines()) == MAX_LISTED + 6
        assert writer.status.last_error is None

        write(root, "callers/b.md", "b\n")
        started = time.monotonic()
        assert await writer.commit(["callers/b.md"], "fact for bbbbbbbbbbbb", "api") is not None
        assert time.monotonic() - started < 2.0
        assert git(root, "log", "-1", "--format=%B") == "fact for bbbbbbbbbbbb\n\nSource: api\n\n"
    finally:
        await writer.stop()
        await worker.stop()
    assert int(git(root, "ls-files", "callers").count("\n")) == MANY + 2
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""


@pytest.mark.slow(seconds=2)
def test_start_up_commits_many_files_changed_while_stopped(tmp_path: Path, small_argument_room: int) -> None:
    # A sync tool dropped ten thousand files into the vault while the service was stopped: start-up
    # commits them all, as one hand-edit commit, instead of failing on the argument limit.
    root = tmp_path / "vault"
    open_service(make_settings(root))
    paths = write_many(root, MANY, folder="attachments")
    assert argument_bytes(paths) > small_argument_room, "the paths would fit on one command line"
    write(root, "soul.md", "Be kind, and brief.\n")
    open_service(make_settings(root))
    assert git(root, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(root, "log", "-1", "--format=%B") == (
        f"hand edits made while memory-bridge was stopped ({MANY + 1} file(s))\n\nSource: hand-edit\n\n"
    )
    assert git(root, "ls-files", "attachments").count("\n") == MANY


@pytest.mark.anyio
async def test_loose_objects_are_packed_when_the_writer_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Commits never start git's housekeeping themselves (it would land in a burst of calls); the
    # writer runs it once nothing has been committed for a while.

    monkeypatch.setattr(gitwriter, "_HOUSEKEEPING_IDLE_SECONDS", 0.3)
    monkeypatch.setattr(gitwriter, "_GC_AUTO", 1)
    root = tmp_path / "vault"
    writer = make_repo(root)
    await writer.start()
    try:
        for n in range(3000):  # enough loose objects for every fan-out folder git samples
            write(root, f"callers/{n}.md", f"caller {n}\n")
        await writer.commit(["callers"], "many callers", "cli")
        assert "packs: 0" in git(root, "count-objects", "-v"), "the commit itself did no housekeeping"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
            "packs: 0" in git(root, "count-objects", "-v") or (root / ".git" / "gc.pid").exists()
        ):
            await asyncio.sleep(0.1)  # the gc works on detached; gc.pid is there until it is done
    finally:
        await writer.stop()
    stats = dict(line.split(": ") for line in git(root, "count-objects", "-v").splitlines())
    assert int(stats["packs"]) >= 1 and int(stats["in-pack"]) >= 3000
    assert_clean(root)


@pytest.mark.anyio
async def test_commits_follow_history_when_git_has_packed_the_branch(tmp_path: Path) -> None:
    # After a gc the branch lives in packed-refs, not in its own file: the next commit still has
    # the last one as its parent (a commit without a parent would cut the history off).
    root = tmp_path / "vault"
    writer = make_repo(root)
    await writer.start()
    try:
        write(root, "callers/a.md", "a\n")
        first = await writer.commit(["callers/a.md"], "first", "api")
        git(root, "pack-refs", "--all", "--prune")
        assert not (root / ".git" / "refs" / "heads" / "main").exists()
        write(root, "callers/a.md", "a, again\n")
        second = await writer.commit(["callers/a.md"], "second", "api")
        # Nothing staged differs from HEAD: no empty commit.
        assert await writer.commit(["callers/a.md"], "nothing", "api") is None
    finally:
        await writer.stop()
    assert git(root, "rev-parse", "HEAD").strip() == second
    assert git(root, "rev-parse", "HEAD~1").strip() == first
    assert count(root) == 3
    assert "commit: second" in git(root, "reflog", "-1")
    assert_clean(root)
