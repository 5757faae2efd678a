"""`./scripts/serve` on a fresh copy of the project: sets itself up, serves, keeps the vault to itself.

Slow on its first start (it creates a virtual environment and installs the project), which is the
point: this is what a person does after cloning.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from server.config import VARIABLES
from tests.conftest import free_port, git

ROOT = Path(__file__).resolve().parents[1]
# Variables of SPEC §9 (and the test knobs) that must not leak from the test run into the copy's server.
CONFIG_VARS = {*VARIABLES, "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}


def fresh_copy(dest: Path) -> Path:
    """The project's files as a clone would have them (tracked and new, never ignored), committed."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    dest.mkdir()
    for rel in filter(None, listed.split("\0")):
        source = ROOT / rel
        if not source.is_file() or rel.startswith(".venv/"):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    assert not (dest / ".venv").exists()
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "fresh copy")
    return dest


def clean_env(port: int) -> dict[str, str]:
    """The environment of a person's shell: no test settings, no virtual environment on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS and not k.startswith("GIT_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in p + "/")
    env["PORT"] = str(port)
    return env


class Serve:
    """`./scripts/serve` running in its own process group."""

    def __init__(self, project: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["./scripts/serve"],
                cwd=project,
                env=clean_env(self.port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float) -> float:
        """Seconds until /health answers; fails if the process exits or the deadline passes."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"./scripts/serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"./scripts/serve was not ready within {timeout} s:\n{self.output()}")

    def stop(self, sig: int) -> None:
        """Signal the whole process group and check that it shuts down cleanly.

        uvicorn re-raises the signal after its graceful shutdown, so "killed by `sig`" is a clean exit too.
        """
        assert self.proc.poll() is None, f"./scripts/serve is not running:\n{self.output()}"
        os.killpg(self.proc.pid, sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"./scripts/serve did not stop on {signal.Signals(sig).name}:\n{self.output()}")
        output = self.output()
        assert code in (0, -sig), f"exit status {code}:\n{output}"
        assert "Application shutdown complete" in output, output
        assert "Traceback" not in output, output

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.mark.slow(seconds=20)
def test_serve_sets_itself_up_on_a_fresh_copy(tmp_path: Path) -> None:
    project = fresh_copy(tmp_path / "project")
    vault = project / "vault"
    stamp_glob = ".venv/.installed*"

    first = Serve(project, tmp_path / "first.log")
    try:
        first.wait_ready(timeout=540)
        health = httpx.get(f"{first.url}/health").json()
        assert health["status"] == "ok", health
        assert health["callers"] == 0
        # ./vault is a git repository of its own, with the initial commit.
        assert (vault / ".git").is_dir()
        assert Path(git(vault, "rev-parse", "--show-toplevel").strip()) == vault.resolve()
        log = git(vault, "log", "--format=%s%n%b")
        assert log.strip(), "the vault has no commit"
        assert "Source: " in log
        assert "soul.md" in git(vault, "ls-files")
        # Some vault content of a caller, then the project's own repository must still see nothing.
        call = {"caller_id": "+14155550123", "called_number": "+14155550199", "call_sid": "CA1"}
        answer = httpx.post(f"{first.url}/webhook/personalize", content=json.dumps(call)).json()
        assert answer["type"] == "conversation_initiation_client_data"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            list((vault / "callers").glob("*.md")) and git(vault, "status", "--porcelain") == ""
        ):
            time.sleep(0.05)
        assert list((vault / "callers").glob("*.md")), "the call was not recorded"
        assert git(vault, "status", "--porcelain") == "", "the recorded call was not committed"
        assert git(vault, "log", "-1", "--format=%B").strip().endswith("Source: webhook")
        assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
        first.stop(signal.SIGINT)
    finally:
        first.kill()
    assert git(vault, "status", "--porcelain") == "", "everything the service wrote is committed"
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    stamps = {p: p.stat().st_mtime_ns for p in project.glob(stamp_glob)}
    assert stamps, "the set-up leaves a stamp to reuse the environment"
    site = next((project / ".venv" / "lib").glob("python*/site-packages"))
    site_mtime = site.stat().st_mtime_ns

    # The second start reuses the environment: no installation, ready in moments.
    second = Serve(project, tmp_path / "second.log")
    try:
        ready = second.wait_ready(timeout=60)
        assert ready < 5, f"the second start took {ready:.1f} s: was the environment reinstalled?"
        assert httpx.get(f"{second.url}/health").json()["status"] == "ok"
        second.stop(signal.SIGTERM)
    finally:
        second.kill()
    assert "Setting up" not in second.output()
    assert {p: p.stat().st_mtime_ns for p in project.glob(stamp_glob)} == stamps
    assert site.stat().st_mtime_ns == site_mtime
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
