"""The merge driver as git runs it: `merge-driver install`, `merge-file`, its record, and real pulls (SPEC §11)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from server import mergedriver
from server.markdown import Kind
from server.merge import Method
from server.mergefile import CONFLICTS_FILE, MergeConflict, kind_for, read_conflicts, record
from server.service import open_service
from tests.conftest import MARIA, make_settings
from tests.vault_samples import H

BIN = Path(sys.executable).parent  # where the `memory-bridge` console script is installed
ATTRIBUTES = "".join(f"{pattern} merge=memory-bridge\n" for pattern in mergedriver.PATTERNS)

CALLER = f"""---
phone_hash: "{H}"
name: Maria Lopez
aliases:
  - Maria Lopez
call_count: 3
first_call: 2026-11-01
last_call: 2026-11-20
---
# Maria Lopez

## Facts
- Prefers morning appointments

## Calls
- 2026-11-20 14:02 · Asked to move her dentist appointment. (conv_1)

## Notes
Free text a person wrote.
"""
NOTE = "# 2026-11-25\n\nThe office closes at 3pm today.\n\n- Dr. Kim is out\n"
CALLER_PATH = "callers/Maria Lopez.md"  # a person renamed it: a space, which git quotes for the driver
NOTE_PATH = "notes/2026-11-25.md"


def git_env(path: str | None = None, **extra: str) -> dict[str, str]:
    """The machine's git config left out, an identity of its own; `path` replaces PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | extra
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Ana",
        GIT_AUTHOR_EMAIL="ana@example.com",
        GIT_COMMITTER_NAME="Ana",
        GIT_COMMITTER_EMAIL="ana@example.com",
        PATH=path if path is not None else f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def run(
    cwd: Path, *argv: str, ok: bool = True, path: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=git_env(path, **env), capture_output=True, text=True, check=False)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


def git(cwd: Path, *args: str, ok: bool = True, path: str | None = None) -> subprocess.CompletedProcess[str]:
    return run(cwd, "git", *args, ok=ok, path=path)


def markers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("<<<<<<<", "=======", ">>>>>>>", "|||||||"))]


# ---------------------------------------------------------------------------------------------
# Installing


def test_install_registers_the_command_and_names_the_paths(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main", "clone")
    clone = tmp_path / "clone"
    (clone / "callers").mkdir()
    proc = run(clone / "callers", str(BIN / "memory-bridge"), "merge-driver", "install")  # from a subfolder
    assert proc.stdout.splitlines() == [
        "merge driver registered in .git/config",
        *(f"added to .gitattributes: {line}" for line in ATTRIBUTES.splitlines()),
        "commit .gitattributes so that every clone merges these files the same way",
    ]
    assert git(clone, "config", "merge.memory-bridge.driver").stdout == "memory-bridge merge-file %O %A %B %P\n"
    assert git(clone, "config", "merge.memory-bridge.name").stdout == mergedriver.NAME + "\n"
    assert (clone / ".gitattributes").read_text() == ATTRIBUTES
    assert [git(clone, "check-attr", "merge", "--", p).stdout for p in ("callers/a/b.md", "soul.md", "x.md")] == [
        "callers/a/b.md: merge: memory-bridge\n",
        "soul.md: merge: memory-bridge\n",
        "x.md: merge: unspecified\n",
    ]

    again = run(clone, sys.executable, "-m", "server.cli", "merge-driver", "install", "--repo", str(clone))
    assert again.stdout == "merge driver already registered in .git/config\n"
    assert (clone / ".gitattributes").read_text() == ATTRIBUTES


def test_install_keeps_a_persons_lines_and_adds_only_the_missing_ones(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "clone")
    clone = tmp_path / "clone"
    (clone / ".gitattributes").write_text("*.png binary\n# ours\nnotes/*.md   merge=memory-bridge  diff")
    run(tmp_path, sys.executable, "-m", "server.cli", "merge-driver", "install", "--repo", str(clone))
    assert (clone / ".gitattributes").read_text() == (
        "*.png binary\n# ours\nnotes/*.md   merge=memory-bridge  diff\n"
        "callers/**/*.md merge=memory-bridge\nsoul.md merge=memory-bridge\nsouls/*.md merge=memory-bridge\n"
    )


def test_install_outside_a_repository_says_so(tmp_path: Path) -> None:
    proc = run(tmp_path, sys.executable, "-m", "server.cli", "merge-driver", "install", ok=False)
    assert proc.stderr.startswith("memory-bridge: git rev-parse failed: fatal: not a git repository")
    assert not (tmp_path / ".gitattributes").exists()


def test_the_service_command_survives_the_shell() -> None:
    command = mergedriver.service_command("/opt/memory bridge/it's/python3")
    arguments = ["-m", "server.cli", "merge-file", "%O", "%A", "%B", "%P"]
    assert shlex.split(command) == ["/opt/memory bridge/it's/python3", *arguments]


def test_the_service_registers_the_driver_at_every_start(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    open_service(make_settings(root))
    command = git(root, "config", "merge.memory-bridge.driver").stdout.strip()
    assert command == mergedriver.service_command(sys.executable)
    assert (root / ".gitattributes").read_text() == ATTRIBUTES
    assert ".gitattributes" in git(root, "show", "--name-only", "--format=", "HEAD").stdout.split()  # the first commit

    # A vault from before the driver: registered and committed at the next start, and only then.
    git(root, "rm", "-q", ".gitattributes")
    git(root, "commit", "-q", "-m", "no driver")
    git(root, "config", "--unset", "merge.memory-bridge.driver")
    open_service(make_settings(root))
    assert git(root, "config", "merge.memory-bridge.driver").stdout.strip() == command
    assert git(root, "log", "-1", "--format=%s%n%b").stdout.splitlines()[:1] == [
        "merge driver: .gitattributes names caller files, notes and souls"
    ]
    assert git(root, "status", "--porcelain").stdout == ""
    head = git(root, "rev-parse", "HEAD").stdout
    open_service(make_settings(root))
    assert git(root, "rev-parse", "HEAD").stdout == head


# ---------------------------------------------------------------------------------------------
# merge-file, run by hand as git runs it


def _three(tmp: Path, base: str, ours: str, theirs: str) -> tuple[Path, Path, Path]:
    paths = (tmp / ".merge_file_o", tmp / ".merge_file_a", tmp / ".merge_file_b")
    for path, text in zip(paths, (base, ours, theirs), strict=True):
        path.write_text(text)
    return paths


def test_merge_file_writes_ours_records_the_conflict_and_logs_no_content(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "repo")
    repo = tmp_path / "repo"
    fact = f"- Call her on {MARIA}\n"
    ours = CALLER.replace("name: Maria Lopez", "name: Maria L.").replace("appointments\n", "appointments\n" + fact)
    theirs = CALLER.replace("name: Maria Lopez", "name: Maria Lopez-Garcia").replace("3\n", "4\n")
    o, a, b = _three(repo, CALLER, ours, theirs)
    proc = run(repo, sys.executable, "-m", "server.cli", "merge-file", o.name, a.name, b.name, CALLER_PATH)
    assert a.read_text() == theirs.replace("appointments\n", "appointments\n" + fact)
    assert proc.stdout == ""
    assert proc.stderr == (
        "memory-bridge merge-file: merged callers/Maria Lopez.md; both sides changed name: kept the remote's value; "
        "for a person to look at\n"
    )
    [line] = (repo / ".git" / CONFLICTS_FILE).read_text().splitlines()
    entry = json.loads(line)
    assert entry.pop("at")[:2] == "20"
    assert entry == {"path": CALLER_PATH, "remote_keys": ["name"], "prose_kept_twice": 0, "method": "rules"}
    [conflict] = read_conflicts(repo / ".git")
    assert (conflict.path, conflict.remote_keys, conflict.method) == (CALLER_PATH, ("name",), Method.RULES)


def test_merge_file_records_in_the_repository_git_names_in_git_dir(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "--bare", "elsewhere.git")
    soul = "---\nfirst_message: Hello\n---\nBe kind.\n"
    ours, theirs = soul.replace("Hello", "Hi"), soul.replace("Hello", "Hey").replace("kind", "calm")
    o, a, b = _three(tmp_path, soul, ours, theirs)
    cli = (sys.executable, "-m", "server.cli", "merge-file", o.name, a.name, b.name, "souls/sales.md")
    run(tmp_path, *cli, GIT_DIR="elsewhere.git")
    assert a.read_text() == theirs
    [conflict] = read_conflicts(tmp_path / "elsewhere.git")
    assert (conflict.path, conflict.remote_keys, conflict.prose_kept_twice) == ("souls/sales.md", ("first_message",), 0)


def test_merge_file_that_resolves_cleanly_records_nothing(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "repo")
    repo = tmp_path / "repo"
    o, a, b = _three(repo, NOTE, NOTE + "- Fire drill at 11\n", NOTE + "- New phone system\n")
    proc = run(repo, str(BIN / "memory-bridge"), "merge-file", o.name, a.name, b.name, NOTE_PATH)
    assert a.read_text() == NOTE + "- Fire drill at 11\n- New phone system\n"
    assert proc.stderr == f"memory-bridge merge-file: merged {NOTE_PATH}\n"
    assert not (repo / ".git" / "memory-bridge").exists()


def test_merge_file_that_cannot_run_exits_non_zero_and_leaves_ours(tmp_path: Path) -> None:
    o, a, b = _three(tmp_path, CALLER, CALLER + "x\n", CALLER + "y\n")
    o.unlink()
    proc = run(
        tmp_path, sys.executable, "-m", "server.cli", "merge-file", o.name, a.name, b.name, CALLER_PATH, ok=False
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("memory-bridge merge-file: could not merge callers/Maria Lopez.md; git leaves it")
    assert a.read_text() == CALLER + "x\n"


def test_merge_file_loads_neither_the_web_app_nor_the_service(tmp_path: Path) -> None:
    o, a, b = _three(tmp_path, NOTE, NOTE + "- a\n", NOTE + "- b\n")
    script = (
        "import sys\nfrom server.cli import main\n"
        f"code = main(['merge-file', {str(o)!r}, {str(a)!r}, {str(b)!r}, 'notes/2026-11-25.md'])\n"
        "heavy = {'litestar', 'uvicorn', 'asyncio', 'watchfiles', 'server.service', 'server.app', 'server.config'}\n"
        "print(code, sorted(heavy & set(sys.modules)))\n"
    )
    assert run(tmp_path, sys.executable, "-c", script).stdout == "0 []\n"


def test_the_record_is_read_back_from_its_tail(tmp_path: Path) -> None:
    assert read_conflicts(tmp_path) == []
    (tmp_path / CONFLICTS_FILE).parent.mkdir(parents=True)
    (tmp_path / CONFLICTS_FILE).write_text("not json\n" + "x" * 300_000 + "\n")
    entries = [
        MergeConflict(path=f"callers/{i}.md", at="2026-11-25T10:00:00+00:00", remote_keys=("name",)) for i in range(60)
    ]
    for entry in entries:
        record(tmp_path, entry)
    assert read_conflicts(tmp_path) == entries[10:]
    assert read_conflicts(tmp_path, limit=2) == entries[58:]


def test_paths_name_the_rules_a_file_merges_by() -> None:
    assert [kind_for(p) for p in ("callers/a/b.md", "notes/2026-11-25.md", "soul.md", "souls/sales.md", "x.md")] == [
        Kind.CALLER,
        Kind.NOTE,
        Kind.SOUL,
        Kind.SOUL,
        Kind.OTHER,
    ]


# ---------------------------------------------------------------------------------------------
# Real pulls: a bare remote and clones driven with the git CLI, as obsidian-git drives it


def _remote_with_a_vault(tmp_path: Path) -> Path:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(tmp_path, "clone", "-q", str(remote), "first")
    first = tmp_path / "first"
    (first / "callers").mkdir()
    (first / "notes").mkdir()
    (first / CALLER_PATH).write_text(CALLER)
    (first / NOTE_PATH).write_text(NOTE)
    run(first, str(BIN / "memory-bridge"), "merge-driver", "install")
    git(first, "add", "-A")
    git(first, "commit", "-q", "-m", "vault")
    git(first, "push", "-q", "origin", "main")
    return remote


def _edit_both_sides(a: Path, b: Path) -> None:
    """The same caller and the same daily note edited in two clones; `a` pushes first, `b` commits."""
    for clone, name, fact, call, count, bullet in (
        (a, "Maria L.", "- Has a dog named Rex", "- 2026-11-22 09:00 · Bill question. (conv_a)", "4", "- Fire drill"),
        (
            b,
            "Maria Lopez-Garcia",
            "- Likes tea",
            "- 2026-11-21 10:00 · Wants a callback. (conv_b)",
            "5",
            "- New phones",
        ),
    ):
        text = (clone / CALLER_PATH).read_text()
        text = text.replace("name: Maria Lopez\n", f"name: {name}\n").replace("call_count: 3", f"call_count: {count}")
        text = text.replace("appointments\n", f"appointments\n{fact}\n").replace("(conv_1)\n", f"(conv_1)\n{call}\n")
        (clone / CALLER_PATH).write_text(text)
        (clone / NOTE_PATH).write_text((clone / NOTE_PATH).read_text() + bullet + "\n")
        git(clone, "commit", "-q", "-am", "edit")
    git(a, "push", "-q", "origin", "main")


def test_two_clones_edit_one_caller_and_pull_merges_without_conflict(tmp_path: Path) -> None:
    remote = _remote_with_a_vault(tmp_path)
    git(tmp_path, "clone", "-q", str(remote), "laptop")
    git(tmp_path, "clone", "-q", str(remote), "other")
    laptop, other = tmp_path / "laptop", tmp_path / "other"
    for clone in (laptop, other):
        run(clone, str(BIN / "memory-bridge"), "merge-driver", "install")
    _edit_both_sides(other, laptop)

    git(laptop, "pull", "-q", "--no-rebase", "origin", "main")  # exit 0: no conflict left
    merged = (laptop / CALLER_PATH).read_text()
    assert merged == (
        CALLER.replace("name: Maria Lopez\n", "name: Maria L.\n")  # both changed it: the remote's
        .replace("call_count: 3", "call_count: 6")
        .replace("appointments\n", "appointments\n- Likes tea\n- Has a dog named Rex\n")
        .replace(
            "(conv_1)\n",
            "(conv_1)\n- 2026-11-21 10:00 · Wants a callback. (conv_b)\n- 2026-11-22 09:00 · Bill question. (conv_a)\n",
        )
    )
    assert (laptop / NOTE_PATH).read_text() == NOTE + "- New phones\n- Fire drill\n"
    assert markers(merged) == []
    assert git(laptop, "status", "--porcelain").stdout == ""
    assert len(git(laptop, "log", "-1", "--format=%P").stdout.split()) == 2  # a merge commit
    [conflict] = read_conflicts(laptop / ".git")
    assert (conflict.path, conflict.remote_keys, conflict.prose_kept_twice) == (CALLER_PATH, ("name",), 0)

    git(laptop, "push", "-q", "origin", "main")
    git(other, "pull", "-q", "--no-rebase", "origin", "main")  # a fast-forward: the same files
    assert (other / CALLER_PATH).read_text() == merged


def test_a_clone_without_the_driver_gets_conflict_markers(tmp_path: Path) -> None:
    # What the driver is for, and what the service must guard against: a clone where nobody ran
    # `memory-bridge merge-driver install` has `.gitattributes` (it is committed) but no driver in
    # its `.git/config`, so git merges the files as text and leaves markers in them.
    remote = _remote_with_a_vault(tmp_path)
    git(tmp_path, "clone", "-q", str(remote), "laptop")
    git(tmp_path, "clone", "-q", str(remote), "other")
    laptop, other = tmp_path / "laptop", tmp_path / "other"
    _edit_both_sides(other, laptop)

    proc = git(laptop, "pull", "--no-rebase", "origin", "main", ok=False)
    assert f"CONFLICT (content): Merge conflict in {CALLER_PATH}" in proc.stdout
    assert markers((laptop / CALLER_PATH).read_text()) != []
    assert markers((laptop / NOTE_PATH).read_text()) != []
    assert not (laptop / ".git" / CONFLICTS_FILE).exists()


def test_the_service_registers_a_driver_that_needs_no_path(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    open_service(make_settings(root))
    (root / CALLER_PATH).write_text(CALLER)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a caller")
    git(tmp_path, "clone", "-q", str(root), "laptop")
    laptop = tmp_path / "laptop"
    run(laptop, str(BIN / "memory-bridge"), "merge-driver", "install")
    for clone, fact in ((laptop, "- Likes tea"), (root, "- Has a dog named Rex")):
        text = (clone / CALLER_PATH).read_text().replace("appointments\n", f"appointments\n{fact}\n")
        (clone / CALLER_PATH).write_text(text)
        git(clone, "commit", "-q", "-am", "a fact")

    git(root, "pull", "-q", "--no-rebase", str(laptop), "main", path="/usr/bin:/bin")  # no memory-bridge on PATH
    assert (root / CALLER_PATH).read_text() == CALLER.replace(
        "appointments\n", "appointments\n- Has a dog named Rex\n- Likes tea\n"
    )
