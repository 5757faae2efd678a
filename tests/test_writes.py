"""writes.py: a person's edit is committed as theirs, never with a write of ours that is not committed yet.

In process, on a real vault with real git. The commit of the service's own write is held back (the
git writer's `commit` waits for the test's go) to keep open, for as long as the test needs, the
moment between that write reaching the disk and its commit.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.gitstage import Exact
from server.service import Service, open_service
from tests.conftest import MARIA, git, make_settings
from tests.live_helpers import MARIA_KEY, caller_md

PERSONS_LINE = "- typed by a person"


def hold_api_commits(service: Service) -> asyncio.Event:
    """Make the git writer wait, before each `Source: api` commit, until the returned event is set."""
    writer = service.memory.git
    commit = writer.commit
    go = asyncio.Event()

    async def held(
        paths: list[str], lines: str | list[str], source: str, exact: dict[str, Exact] | None = None
    ) -> str | None:
        if source == "api":
            await go.wait()
        return await commit(paths, lines, source, exact)

    writer.commit = held  # type: ignore[method-assign]
    return go


def added_and_removed(root: Path, relpath: str) -> list[tuple[str, list[str], list[str]]]:
    """Each commit touching `relpath`, oldest first: its Source, the lines it added and those it removed."""
    out = git(root, "log", "--reverse", "-p", "--format=%x1e%(trailers:key=Source,valueonly)%x1f", "--", relpath)
    result = []
    for chunk in out.split("\x1e")[1:]:
        source, _, patch = chunk.partition("\x1f")
        lines = patch.splitlines()
        added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
        removed = [line[1:] for line in lines if line.startswith("-") and not line.startswith("---")]
        result.append((source.strip(), added, removed))
    return result


@pytest.mark.anyio
@pytest.mark.parametrize("committer", ["the watcher", "the next write"])
async def test_a_persons_edit_is_committed_without_our_uncommitted_write(tmp_path: Path, committer: str) -> None:
    root = tmp_path / "vault"
    open_service(make_settings(root))
    relpath = "callers/Maria Lopez.md"  # a person's name for the file: it stays where it is
    (root / relpath).write_text(caller_md(MARIA, facts=("Seed",)), encoding="utf-8")
    service = open_service(make_settings(root))
    await service.start(watch=False)  # the test says when a hand edit is committed, and by whom
    memory = service.memory
    go = hold_api_commits(service)
    try:
        ours = asyncio.create_task(memory.add_fact(MARIA_KEY, "Likes jazz", "api"))
        for _ in range(500):  # written to the disk; its commit waits for `go`
            if "Likes jazz" in (root / relpath).read_text(encoding="utf-8"):
                break
            await asyncio.sleep(0.01)
        assert "Likes jazz" in (root / relpath).read_text(encoding="utf-8")
        with open(root / relpath, "a", encoding="utf-8") as file:
            file.write(PERSONS_LINE + "\n")
        if committer == "the watcher":  # its quiet period is over
            theirs = asyncio.create_task(service.watcher._commit_hand_edits([relpath]))
        else:  # which commits the person's edit first
            theirs = asyncio.create_task(memory.add_fact(MARIA_KEY, "Has a cat", "api"))
        await asyncio.sleep(0.3)
        assert not theirs.done(), "the person's edit was committed while our write was not"
        go.set()
        await ours
        await theirs
    finally:
        go.set()
        await service.stop()

    history = added_and_removed(root, relpath)[1:]  # after the file's first commit
    expected = [("api", ["- Likes jazz"], []), ("hand-edit", [PERSONS_LINE], [])]
    if committer == "the next write":
        expected.append(("api", ["- Has a cat"], []))
    assert history == expected
