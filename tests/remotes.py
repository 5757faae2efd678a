"""Real git remotes for the sync tests: bare repositories served by `git daemon` on loopback, and laptops.

A "laptop" is a plain clone driven with the git CLI the way obsidian-git drives it: edit, add, commit,
pull, push. Nothing here is a mock: the transport is git's own protocol over a TCP port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port


def git_env(name: str = "Laptop Person", email: str = "person@example.com") -> dict[str, str]:
    """A git environment that ignores the machine's configuration, with a person's identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME=name,
        GIT_AUTHOR_EMAIL=email,
        GIT_COMMITTER_NAME=name,
        GIT_COMMITTER_EMAIL=email,
        GIT_TERMINAL_PROMPT="0",
    )
    return env


def run_git(
    cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run git in `cwd` as a person would."""
    return subprocess.run(
        ["git", "-C", str(cwd), *args], env=env or git_env(), capture_output=True, text=True, check=check
    )


@dataclass
class GitDaemon:
    """`git daemon` serving every bare repository under `base` on a loopback port, pushes allowed."""

    base: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = self.port or free_port()
        self.proc = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                f"--base-path={self.base}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                str(self.base),
            ],
            env=git_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("git daemon did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
            self.proc = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def bare(self, name: str = "vault.git") -> str:
        """Create an empty bare repository and return its URL."""
        run_git(self.base, "init", "-q", "--bare", "-b", "main", name)
        return self.url(name)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    """A git daemon for the test, stopped at its end."""
    base = tmp_path / "remotes"
    base.mkdir()
    served = GitDaemon(base)
    served.start()
    yield served
    served.stop()


@dataclass
class Laptop:
    """A person's clone of the vault, driven with the git CLI."""

    path: Path
    env: dict[str, str]

    @classmethod
    def clone(cls, url: str, path: Path, driver: bool = False) -> Laptop:
        env = git_env()
        if driver:  # the driver is `memory-bridge merge-file`, found on PATH as on a laptop with it installed
            env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        run_git(path.parent, "clone", "-q", url, path.name, env=env)
        laptop = cls(path, env)
        if driver:
            subprocess.run(
                [sys.executable, "-m", "server.cli", "merge-driver", "install", "--repo", str(path)],
                env=env,
                check=True,
                capture_output=True,
            )
        return laptop

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_git(self.path, *args, check=check, env=self.env)

    def write(self, relpath: str, text: str) -> None:
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def read(self, relpath: str) -> str:
        return (self.path / relpath).read_text(encoding="utf-8")

    def commit_all(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def pull(self) -> subprocess.CompletedProcess[str]:
        return self.git("pull", "-q", "--no-rebase", "--no-edit", "origin", "main", check=False)

    def push(self) -> subprocess.CompletedProcess[str]:
        return self.git("push", "-q", "origin", "HEAD:main", check=False)

    def sync(self) -> None:
        """obsidian-git's "commit and sync": pull (merge), then push; retried if someone pushed first."""
        for _ in range(10):
            pulled = self.pull()
            assert pulled.returncode == 0, pulled.stderr + pulled.stdout
            if self.push().returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError("the laptop could not push")
