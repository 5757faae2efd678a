"""Starting, probing and stopping the servers under test, each in its own process.

The service runs exactly as in production: `python -m server.cli --env-file /dev/null serve`
(uvicorn, one worker, no access log, asyncio's loop and httptools). The baseline runs
through the same command (see `benchmarks.baseline_app`).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import VARIABLES

HOST = "127.0.0.1"
WEBHOOK_SECRET = "bench-webhook-secret"
ELEVENLABS_SECRET = "wsec_bench_secret"
ADMIN_KEY = "bench-admin-key"
PHONE_HASH_KEY = "bench-phone-hash-key-0123456789"
AGENT_NUMBER = "+14155550199"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def service_env(vault: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment the service runs with in the benchmark: known secrets, quiet logs."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith("GIT_")}
    env.update(
        VAULT_DIR=str(vault),
        HOST=HOST,
        PORT=str(port),
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        ELEVENLABS_WEBHOOK_SECRET=ELEVENLABS_SECRET,
        ADMIN_API_KEY=ADMIN_KEY,
        PHONE_HASH_KEY=PHONE_HASH_KEY,
        AGENT_NUMBERS=AGENT_NUMBER,
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


@dataclass
class Server:
    """A server process on a loopback port."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    spawned_at: float
    log_path: Path
    ready_after: float | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def get_json(self, path: str, headers: dict[str, str] | None = None, timeout: float = 10) -> Any:
        """GET a JSON document (blocking; not for measured paths)."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {path} on {self.name} answered {resp.status}: {data[:300]!r}")
            return json.loads(data)
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        """The service's whole `/health` document (its details need the admin key)."""
        return self.get_json("/health", {"Authorization": f"Bearer {ADMIN_KEY}"})  # type: ignore[no-any-return]

    def wait_ready(self, timeout: float) -> float:
        """Poll `GET /health` every 5 ms until it answers 200; seconds from spawn to ready."""
        deadline = self.spawned_at + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early (code {self.proc.returncode}):\n{self.logs()}")
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
                conn.request("GET", "/health")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    self.ready_after = time.monotonic() - self.spawned_at
                    return self.ready_after
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} was not ready after {timeout} s:\n{self.logs()}")

    def memory_kb(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the process, in kB, from /proc/<pid>/status."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in {"VmRSS", "VmHWM"}:
                out[name] = int(value.split()[0])
        return out

    def children_rss_kb(self) -> int:
        """VmRSS of the process's children together (the service's worker process), in kB."""
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return 0
        total = 0
        for child in children:
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue  # gone meanwhile (a git command)
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        return total

    def cpu_split(self) -> tuple[float, float]:
        """CPU seconds (user + system) of the process itself, and of its children (the worker process and
        the git commands it ran, whether finished or running)."""
        own, waited = _cpu(self.proc.pid)
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            child_own, child_waited = _cpu(int(child))
            waited += child_own + child_waited
        return own, waited

    def cpu_seconds(self) -> float:
        """CPU seconds of the process and its waited-for children (git) together."""
        own, children = self.cpu_split()
        return own + children

    def wait_quiet(self, timeout: float = 180, window: float = 0.5, share: float = 0.05) -> float:
        """Wait until the server is idle; returns the seconds waited.

        Idle: under `share` of a CPU for a `window`, nothing pending in `/health` (`pending_writes`,
        and `pending_calls` where the service reports it), and no new commit over three windows in a
        row. Work a request leaves behind (recording the call, committing) shows in no counter until
        it reaches git, and a recorder may pause between batches, hence the CPU and commit checks.
        """
        started = time.monotonic()
        calm = 0
        last_commit = None
        while time.monotonic() - started < timeout:
            before = self.cpu_seconds()
            time.sleep(window)
            busy = (self.cpu_seconds() - before) / window
            health = self.health()
            pending = health.get("pending_writes", 0) or health.get("pending_calls", 0)
            commit = health.get("last_commit")
            calm = calm + 1 if busy < share and not pending and commit == last_commit else 0
            last_commit = commit
            if calm >= 3:
                return time.monotonic() - started - 3 * window
        raise RuntimeError(f"{self.name} was still busy after {timeout} s")

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (graceful: the service commits what is pending), then SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        """The server's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of a process, and of its children it has waited for (0 for a process gone meanwhile)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    # utime stime cutime cstime
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def other_machine() -> list[str]:
    """The prefix that starts a command standing in for another machine: it takes only CPU left idle.

    The kernel's idle class (`chrt --idle`) at niceness 19: a process of the measured server that
    wakes takes the CPU from it at once, not after its time slice. Where the idle class is refused
    (a sandbox), niceness 19 alone.
    """
    ok = subprocess.run(["chrt", "--idle", "0", "true"], capture_output=True, check=False).returncode == 0
    return [*(["chrt", "--idle", "0"] if ok else []), "nice", "-n", "19"]


def _spawn(name: str, args: list[str], env: dict[str, str], port: int, log_path: Path, cwd: Path) -> Server:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        spawned = time.monotonic()
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    return Server(name, proc, port, spawned, log_path)


def start_service(
    vault: Path, log_path: Path, cwd: Path, timeout: float = 120, prefix: tuple[str, ...] = (), **extra: str
) -> Server:
    """Start the real service on `vault` and wait until `/health` answers; `prefix` starts it (e.g. `other_machine`)."""
    port = free_port()
    args = [*prefix, sys.executable, "-m", "server.cli", "--env-file", os.devnull, "serve"]
    server = _spawn("memory-bridge", args, service_env(vault, port, **extra), port, log_path, cwd)
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def start_baseline(body_path: Path, scratch_vault: Path, log_path: Path, cwd: Path) -> Server:
    """Start the bare Litestar baseline (same `serve` command and flags) and wait until it answers."""
    port = free_port()
    env = service_env(scratch_vault, port, BENCH_BASELINE_BODY=str(body_path))
    args = [sys.executable, "-m", "benchmarks.baseline_app"]
    server = _spawn("baseline", args, env, port, log_path, cwd)
    try:
        server.wait_ready(30)
    except BaseException:
        server.stop()
        raise
    return server
