"""The OpenClaw skill (skills/memory-bridge/SKILL.md): its frontmatter, and every command it shows, run.

The frontmatter is converted into Structs that mirror ClawHub's documented schema for a skill
(`name`, `description`, `version`, `metadata.openclaw`: requires, primaryEnv, envVars, install), unknown
fields refused. The commands of its `sh` blocks run in order, as an agent would run them, against a
fresh vault: the `serve` line is started as the service (the live-server fixture, with the skill's own
command), the others run in a shell beside it. A command the skill shows that the CLI does not have
fails, except the ones another part of the project is still adding (PENDING): those are left out
while `memory-bridge --help` does not list them, and run the moment it does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Literal

import msgspec
import pytest
import yaml

from server.config import VARIABLES
from tests.conftest import LiveServer, base_env, git
from tests.live_helpers import key_for

ROOT = Path(__file__).resolve().parents[1]
SKILL_DIR = ROOT / "skills" / "memory-bridge"
SKILL = SKILL_DIR / "SKILL.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Commands the skill teaches that are being built elsewhere (SPEC §14): checked once the CLI has them.
PENDING = ("history", "undo", "list", "search")
# What the skill's examples name, and what stands in for a value only a run can know.
CALLER = "+14155550123"
NAME_RULE = re.compile(r"[a-z0-9-]{1,64}")
SLUG_RULE = re.compile(r"[a-z0-9][a-z0-9-]*")  # ClawHub's slug, derived from the folder name


# -- ClawHub's frontmatter schema (packages/schema: ClawdisSkillMetadataSchema and its parts) ---------


class Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A part of the schema: its field names as ClawHub spells them (camelCase), nothing else accepted."""


class Requires(Strict):
    bins: list[str] = []
    anyBins: list[str] = []
    env: list[str] = []
    config: list[str] = []


class EnvVar(Strict):
    name: str
    required: bool = True
    description: str = ""


class InstallSpec(Strict):
    kind: Literal["brew", "node", "go", "uv"]
    id: str | None = None
    label: str | None = None
    bins: list[str] = []
    formula: str | None = None
    tap: str | None = None
    package: str | None = None
    module: str | None = None


class OpenClaw(Strict):
    always: bool = False
    skillKey: str | None = None
    primaryEnv: str | None = None
    emoji: str | None = None
    homepage: str | None = None
    os: list[str] = []
    cliHelp: str | None = None
    requires: Requires = msgspec.field(default_factory=Requires)
    install: list[InstallSpec] = []
    envVars: list[EnvVar] = []
    author: str | None = None


class Metadata(Strict):
    openclaw: OpenClaw


class Frontmatter(Strict):
    name: str
    description: str
    version: str
    metadata: Metadata
    license: str | None = None
    homepage: str | None = None


def split_skill() -> tuple[dict, str]:
    text = SKILL.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(head)
    assert isinstance(meta, dict)
    return meta, body


def frontmatter() -> Frontmatter:
    return msgspec.convert(split_skill()[0], Frontmatter)


def commands() -> list[str]:
    """Every command line of the skill's `sh` blocks, in order (comments and blank lines left out)."""
    blocks = re.findall(r"^```sh\n(.*?)^```$", split_skill()[1], flags=re.S | re.M)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def subcommand(line: str) -> str | None:
    words = shlex.split(line)
    return words[1] if words[0] == "memory-bridge" and len(words) > 1 else None


def cli_commands() -> set[str]:
    """The commands `memory-bridge --help` lists."""
    out = subprocess.run(
        [sys.executable, "-m", "server.cli", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return set(re.findall(r"^ {4}([a-z][a-z0-9-]*)(?:\s|$)", out, flags=re.M))


# -- the frontmatter -------------------------------------------------------------------------------


def test_the_frontmatter_follows_clawhubs_schema() -> None:
    meta = frontmatter()  # raises on an unknown field or a wrong type anywhere
    assert NAME_RULE.fullmatch(meta.name) and SLUG_RULE.fullmatch(meta.name)
    assert meta.name == SKILL_DIR.name
    assert 0 < len(meta.description) <= 1024
    assert meta.version == PYPROJECT["project"]["version"]  # the project's one version
    assert meta.license == PYPROJECT["project"]["license"]


def test_requirements_environment_and_install_say_what_the_skill_uses() -> None:
    claw = frontmatter().metadata.openclaw
    programs = {shlex.split(line)[0] for line in commands()}
    installed = {name for spec in claw.install for name in spec.bins}
    assert {"python3", "git"} <= set(claw.requires.bins)
    assert programs <= set(claw.requires.bins) | installed, "a program the skill runs is not declared"

    names = [var.name for var in claw.envVars]
    assert len(names) == len(set(names))
    assert set(names) <= set(VARIABLES), "an envVar that is not one of the service's settings"
    assert all(var.description.strip() for var in claw.envVars), "every envVar is described"
    assert claw.requires.env == [var.name for var in claw.envVars if var.required]
    assert any(not var.required for var in claw.envVars)
    assert claw.primaryEnv in claw.requires.env

    # The install entry installs this project, whose console script is the command the skill runs.
    (spec,) = claw.install
    assert spec.kind == "uv" and spec.package == PYPROJECT["project"]["name"]
    assert spec.bins == list(PYPROJECT["project"]["scripts"]) == ["memory-bridge"]


def test_the_body_teaches_each_step() -> None:
    shown = {subcommand(line) for line in commands()}
    assert {"serve", "doctor", "note", "remember", "show", "preview", *PENDING} <= shown
    assert any("/health" in line for line in commands())
    assert any("--date" in line and subcommand(line) == "note" for line in commands())
    never = split_skill()[1].split("## Never", 1)[1]
    for topic in ("daily note", "phone_hash", "git by hand"):
        assert topic in never
    assert "```" not in never, "what an agent must never do is not a command to run"


@pytest.mark.parametrize("name", PENDING)
def test_a_command_still_being_built_is_checked_once_the_cli_has_it(name: str) -> None:
    assert any(subcommand(line) == name for line in commands())
    if name not in cli_commands():
        pytest.skip(f"`memory-bridge {name}` is not in the CLI yet: the skill's step for it is not run")


# -- every command, run ---------------------------------------------------------------------------


def agent_env(vault: Path) -> dict[str, str]:
    """An agent's shell: the test settings, every other setting empty (no stray .env reaches in), the CLI on PATH."""
    env = {**dict.fromkeys(VARIABLES, ""), **base_env(vault)}
    return {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(line: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", "-c", line], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{line}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow(seconds=8)
def test_every_command_in_the_skill_runs_against_a_fresh_vault(tmp_path: Path) -> None:
    lines = commands()
    available = cli_commands()
    for line in lines:
        name = subcommand(line)
        assert name is None or name in available or name in PENDING, f"the CLI has no `{name}`: {line}"
    vault, workdir = tmp_path / "vault", tmp_path / "agent"
    workdir.mkdir()
    env = agent_env(vault)
    (serve,) = [line for line in lines if subcommand(line) == "serve"]
    assert lines.index(serve) < min(i for i, line in enumerate(lines) if subcommand(line) not in (None, "serve"))
    server = LiveServer(vault, env, tmp_path / "server.log", argv=("bash", "-c", f"exec {serve}"), cwd=workdir)
    server.start()
    env["PORT"] = str(server.port)
    ran: list[str] = []
    try:
        for line in lines:
            name = subcommand(line)
            if line == serve or (name in PENDING and name not in available):
                continue
            if "<COMMIT>" in line:  # the newest change to the caller, as `history` shows it
                line = line.replace("<COMMIT>", git(vault, "log", "-1", "--format=%H", "--", "callers").strip())
            before = git(vault, "rev-parse", "HEAD").strip()
            result = run(line, env, workdir)
            ran.append(name or shlex.split(line)[0])
            check(name, line, result, vault, before)
    finally:
        server.stop()
    assert {"doctor", "note", "remember", "show", "preview", "curl", "python3"} <= set(ran)
    assert not list(workdir.iterdir()), "a command left files where the agent ran it"


def check(name: str | None, line: str, result: subprocess.CompletedProcess[str], vault: Path, before: str) -> None:
    """What each kind of step must have done, beyond exiting 0."""
    out = result.stdout
    head = git(vault, "rev-parse", "HEAD").strip()
    caller_files = list((vault / "callers").glob("*.md"))
    if name == "doctor":
        assert out.rstrip().endswith("all good"), out
    elif line.startswith("curl"):
        assert json.loads(out)["status"] == "ok", out
    elif line.startswith("python3"):
        assert re.fullmatch(r"[0-9a-f]{64}\n", out), out
    elif name == "note" and "--date" in line:
        date = shlex.split(line)[shlex.split(line).index("--date") + 1]
        text = shlex.split(line)[2]
        assert text in (vault / "notes" / f"{date}.md").read_text()
        assert head != before and git(vault, "log", "-1", "--format=%B").strip().endswith("Source: cli")
    elif name in ("remember", "note"):
        (caller_file,) = caller_files
        assert shlex.split(line)[-1 if name == "remember" else 2] in caller_file.read_text()
        assert key_for(CALLER) in caller_file.read_text()
        assert head != before
    elif name in ("show", "preview"):
        assert "Prefers morning appointments" in out and head == before
    elif name == "undo":
        assert head != before
    for written in [*caller_files, *(vault / "notes").glob("*.md")]:
        assert CALLER.lstrip("+") not in written.read_text(), f"{written} holds the number"
    assert CALLER.lstrip("+") not in git(vault, "log", "-p", "--all"), "the number reached git history"
