"""Registering the merge driver in a clone: `.git/config` names its command, `.gitattributes` its paths.

SPEC §11: caller files, daily notes and souls merge by the project's rules (`server.mergefile`) in
the service's vault and in every person's clone. The service registers it in its vault at every
start with `<python> -m server.cli merge-file ...`, which needs no PATH; `memory-bridge
merge-driver install` registers `memory-bridge merge-file ...` in a person's clone.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from server import atomic
from server.gitrun import GitRunner

DRIVER = "memory-bridge"
NAME = "memory-bridge: caller files, daily notes and souls merged by the vault's rules"
PATTERNS = ("callers/**/*.md", "notes/*.md", "soul.md", "souls/*.md")
ATTRIBUTE = f"merge={DRIVER}"
# git's placeholders: base, ours (written with the result), theirs, and the file's path.
_ARGUMENTS = "merge-file %O %A %B %P"
# In a person's clone: the `memory-bridge` console script on their PATH.
LAPTOP_COMMAND = f"memory-bridge {_ARGUMENTS}"


@dataclass(frozen=True, slots=True)
class Installed:
    """What `install` changed: the driver's git config, and the lines it added to `.gitattributes`."""

    config_written: bool
    attribute_lines: tuple[str, ...]

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return self.config_written or bool(self.attribute_lines)


def service_command(executable: str) -> str:
    """The driver command for the service: its own interpreter, quoted for the shell git runs it with."""
    return f"{shlex.quote(executable)} -m server.cli {_ARGUMENTS}"


def install(runner: GitRunner, command: str) -> Installed:
    """Register the driver with `command` in the repository at `runner.root` (its top folder); idempotent."""
    want = {f"merge.{DRIVER}.name": NAME, f"merge.{DRIVER}.driver": command}
    if _registered(runner.root, command):
        return Installed(False, ensure_attributes(runner.root / ".gitattributes"))
    listed = runner.run_sync("config", "--local", "--get-regexp", r"^merge\.memory-bridge\.", check=False).stdout
    have = dict(line.split(" ", 1) for line in listed.splitlines() if " " in line)
    written = False
    for key, value in want.items():
        if have.get(key) != value:
            runner.run_sync("config", "--local", key, value)
            written = True
    return Installed(written, ensure_attributes(runner.root / ".gitattributes"))


def _registered(root: Path, command: str) -> bool:
    """Whether `.git/config` plainly holds the driver as it would be written (no git process started).

    Only a certain yes counts: git's own quoting of a value, or any doubt, leaves the check to git.
    """
    try:
        text = (root / ".git" / "config").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    section = f'[merge "{DRIVER}"]'
    if text.count(section) != 1:
        return False
    body = text.split(section, 1)[1].split("\n[", 1)[0]
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    return sorted(lines) == sorted([f"name = {NAME}", f"driver = {command}"])


def missing_attributes(text: str) -> list[str]:
    """The lines `.gitattributes` (its text) lacks to send the vault's files to the driver."""
    named = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and ATTRIBUTE in fields[1:]:
            named.add(fields[0])
    return [f"{pattern} {ATTRIBUTE}" for pattern in PATTERNS if pattern not in named]


def ensure_attributes(path: Path) -> tuple[str, ...]:
    """Add the driver's lines `.gitattributes` lacks, keeping every other line; the lines added."""
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        text = ""
    missing = missing_attributes(text)
    if missing:
        nl = "\r\n" if "\r\n" in text else "\n"
        if text and not text.endswith("\n"):
            text += nl
        atomic.replace(path, (text + nl.join(missing) + nl).encode("utf-8", "surrogateescape"))
    return tuple(missing)
