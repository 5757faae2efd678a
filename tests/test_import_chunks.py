"""`import-seed` of a big predecessor (SPEC §14): chunked commits with progress, resumable, all `Source: cli`.

The real CLI on a real vault. An import killed part-way is finished by running it again, and what
the killed run wrote and never committed is committed as the import's, never as a person's edit.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from server.importer import CHUNK
from tests.conftest import base_env, git, run_cli
from tests.live_helpers import wait_until


def write_seed(folder: Path, callers: int) -> list[str]:
    """A predecessor's data/ with `callers` callers, each with a name and a fact; their plain hashes."""
    folder.mkdir()
    hashes = [hashlib.sha256(f"+1415{i:07d}".encode()).hexdigest() for i in range(callers)]
    sessions = {h: {"phone_hash": h, "caller_name": f"Caller {i}", "call_count": 2} for i, h in enumerate(hashes)}
    (folder / "sessions.json").write_text(json.dumps(sessions))
    (folder / "memories.json").write_text(json.dumps({h: {"phone_hash": h, "facts": ["Likes tea"]} for h in hashes}))
    (folder / "notes.json").write_text("[]")
    return hashes


def sources(vault: Path) -> list[str]:
    """The `Source:` of every commit after the vault's first, oldest first."""
    out = git(vault, "log", "--reverse", "--format=%(trailers:key=Source,valueonly)%x1e", "HEAD~0")
    return [source.strip() for source in out.split("\x1e") if source.strip()][1:]


@pytest.mark.slow(seconds=60)
def test_an_import_killed_part_way_is_finished_by_a_rerun_and_recorded_as_the_imports(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    assert run_cli(vault, "init").returncode == 0
    hashes = write_seed(tmp_path / "data", 4 * CHUNK)
    env = {**os.environ, **base_env(vault)}
    command = [sys.executable, "-m", "server.cli", "--env-file", os.devnull, "--vault", str(vault)]
    killed = subprocess.Popen([*command, "import-seed", str(tmp_path / "data")], env=env, stderr=subprocess.PIPE)
    try:
        # Killed once the first chunk is committed, while it writes the next.
        wait_until(lambda: len(sources(vault)) >= 1, timeout=60, what="the first chunk's commit")
        wait_until(
            lambda: git(vault, "status", "--porcelain", "--untracked-files=all", "callers") != "",
            timeout=30,
            what="the second chunk's first files",
        )
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    left = git(vault, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert left, "the import finished before it could be killed"
    assert (vault / ".git/memory-bridge/import-in-progress").exists()

    # A command run meanwhile leaves the import's files alone: not committed as hand edits.
    assert run_cli(vault, "note", "Closed on Friday").returncode == 0
    assert "hand-edit" not in sources(vault)

    rerun = run_cli(vault, "import-seed", str(tmp_path / "data"))
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.startswith(f"imported {4 * CHUNK} caller(s)")
    assert git(vault, "status", "--porcelain", "--untracked-files=all") == ""
    assert set(sources(vault)) == {"cli"}
    assert not (vault / ".git/memory-bridge/import-in-progress").exists()
    tracked = set(git(vault, "ls-files", "callers").split()) - {"callers/.gitkeep"}
    assert tracked == {f"callers/{h[:12]}.md" for h in hashes}
    resumed = git(vault, "log", "--format=%B", "--grep=import (resumed)")
    assert resumed.count("Source: cli") == 1


@pytest.mark.slow(seconds=90)
def test_an_import_of_10000_callers_commits_in_chunks_with_progress(tmp_path: Path) -> None:
    # Past the ~4,600 callers at which one `git add` of them all once failed (argument list too long);
    # 100,000 take about three minutes on a 2-core machine (measured, not repeated on every test run).
    callers = 10_000
    vault = tmp_path / "vault"
    assert run_cli(vault, "init").returncode == 0
    hashes = write_seed(tmp_path / "data", callers)
    result = run_cli(vault, "import-seed", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout
        == f"imported {callers} caller(s) and 0 daily note(s); {callers} file(s) changed, 0 entr(y/ies) skipped\n"
    )
    bars = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("\rimporting [") or line.startswith("importing [")
    ]
    assert bars[-1].strip("\r") == f"importing [{'#' * 30}] {callers}/{callers}"
    assert len(bars) >= 5
    assert sources(vault) == ["cli"] * (callers // CHUNK)
    assert git(vault, "status", "--porcelain", "--untracked-files=all") == ""
    assert int(git(vault, "ls-files", "callers").count("\n")) == callers + 1  # and .gitkeep
    sample = (vault / f"callers/{hashes[5_432][:12]}.md").read_text()
    assert "name: Caller 5432\n" in sample and "- Likes tea\n" in sample
