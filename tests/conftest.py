"""Shared fixtures: real vaults on disk, real git, and the real server under uvicorn on loopback."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from server.config import Settings, load_settings

# Real git remotes (git daemon on loopback) and laptops, for the sync tests.
pytest_plugins = ["tests.remotes"]

FIXTURES = Path(__file__).parent / "fixtures" / "elevenlabs"

WEBHOOK_SECRET = "test-webhook-secret"
ELEVENLABS_SECRET = "wsec_test_secret_123"
ADMIN_KEY = "test-admin-key"
PHONE_HASH_KEY = "test-phone-hash-key-0123456789"

# Numbers used across the suite; none may ever appear in logs, vault files or git history.
MARIA = "+14155550123"
AGENT_NUMBER = "+14155550199"
OTHER = "+442071838750"


# -- where the tests' files go -----------------------------------------------------------------------

# Linux's shared-memory tmpfs: files there never touch a block device.
_TMPFS = Path("/dev/shm")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Put the run's temporary folders on tmpfs when there is one and none was asked for.

    Almost every test makes a vault and commits to it, and git writes many small files (objects,
    the index, refs) and syncs some: on a slow virtual disk that was half of the suite's time, and on
    tmpfs it costs next to nothing. Each run gets a folder of its own, so two runs at once never
    share one, and the folder is removed when the run ends (tmpfs is memory). xdist's workers are
    given a folder inside it by the controller, so only the controller makes one. Where /dev/shm is
    missing or read-only, pytest's usual temporary folder is used.
    """
    if config.option.basetemp or not (_TMPFS.is_dir() and os.access(_TMPFS, os.W_OK | os.X_OK)):
        return
    run_folder = Path(tempfile.mkdtemp(prefix=f"pytest-{os.getuid()}-", dir=_TMPFS))
    config.option.basetemp = str(run_folder / "base")
    config.add_cleanup(lambda: shutil.rmtree(run_folder, ignore_errors=True))


def fixture_json(name: str) -> dict:
    """A fixture payload from tests/fixtures/elevenlabs."""
    return json.loads((FIXTURES / name).read_text())


def base_env(vault: Path, **extra: str) -> dict[str, str]:
    """Environment for a test service: a private vault, known secrets, fast quiet periods."""
    env = {
        "VAULT_DIR": str(vault),
        "HOST": "127.0.0.1",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ELEVENLABS_WEBHOOK_SECRET": ELEVENLABS_SECRET,
        "ADMIN_API_KEY": ADMIN_KEY,
        "PHONE_HASH_KEY": PHONE_HASH_KEY,
        "AGENT_NUMBERS": AGENT_NUMBER,
        "HAND_EDIT_QUIET_SECONDS": "0.3",
        "RECONCILE_SECONDS": "2",
        "LOG_LEVEL": "DEBUG",
    }
    env.update(extra)
    return env


def make_settings(vault: Path, **extra: str) -> Settings:
    """Settings as the service would read them from `base_env`."""
    return load_settings(base_env(vault, **extra), env_file=None)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git(vault: Path, *args: str) -> str:
    """Run git in a vault and return its output (tests read history with it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"})
    return subprocess.run(["git", "-C", str(vault), *args], env=env, capture_output=True, text=True, check=True).stdout


@dataclass
class LiveServer:
    """A memory-bridge process serving a vault on a loopback port."""

    vault: Path
    env: dict[str, str]
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    # Another command that serves (e.g. a documented one), run in `cwd`; PORT comes from the environment.
    argv: tuple[str, ...] = ()
    cwd: Path | None = None
    client: httpx.Client = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.port = free_port()
        env = {**os.environ, **self.env, "PORT": str(self.port)}
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            list(self.argv) or [sys.executable, "-m", "server.cli", "--env-file", os.devnull, "serve"],
            env=env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.logs()}")
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        logs = self.logs()
        self.stop(signal.SIGKILL)  # never left running behind a failed test
        raise RuntimeError(f"server did not become ready:\n{logs}")

    def stop(self, sig: int | None = None) -> None:
        if self.proc is None:
            return
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.client.close()
        self.proc = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def personalize(self, body: dict | bytes, **headers: str) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(
            "/webhook/personalize",
            content=content,
            headers={"Authorization": f"Bearer {WEBHOOK_SECRET}", "Content-Type": "application/json", **headers},
        )

    def admin(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        return self.client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

    def wait_for(self, predicate, timeout: float = 5.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
        """Poll `predicate` until it returns something truthy; returns that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(interval)


@contextlib.contextmanager
def running_server(folder: Path, **extra: str) -> Iterator[LiveServer]:
    """A server on `folder/vault` (logging to `folder/server.log`) for the length of the block."""
    vault = folder / "vault"
    server = LiveServer(vault=vault, env=base_env(vault, **extra), log_path=folder / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- one server for a module's tests ----------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One running server for the tests of a module that take it (through `shared`).

    Starting a server costs more than most tests that use one. It suits tests that need no vault of
    their own: each keeps to callers and files of its own (`fresh_number`), checks only what it did,
    and leaves nothing broken behind. The module's SHARED_SERVER_ENV, if it has one, holds the
    server's settings. Under xdist a module's tests that share a server run on one worker, so one
    server is started per module (see `pytest_collection_modifyitems`).
    """
    settings = getattr(request.module, "SHARED_SERVER_ENV", {})
    with running_server(tmp_path_factory.mktemp("shared"), **settings) as server:
        yield server


def caught_up(server: LiveServer) -> bool:
    """Every write, recorded call and held post-call event is committed and in the server's index.

    A write's commit lands in git a moment before the index (what the API and the answers read)
    takes it: a test that waited for the commit waits for this too before it reads the index.
    """
    status = server.client.get("/health").json()
    return bool(status["pending_writes"] == 0 and status["pending_calls"] == 0 and status["inbox_held"] == 0)


def settled(server: LiveServer) -> bool:
    """`caught_up`, and nothing on disk is left to commit."""
    return caught_up(server) and git(server.vault, "status", "--porcelain", "--untracked-files=all") == ""


@pytest.fixture
def shared(shared_server: LiveServer) -> Iterator[LiveServer]:
    """The module's shared server, with nothing of an earlier test pending, nor of this one after it."""
    assert shared_server.wait_for(lambda: settled(shared_server), timeout=10), "an earlier test left work pending"
    yield shared_server
    assert shared_server.wait_for(lambda: settled(shared_server), timeout=10), "the test left work pending"


@pytest.fixture(scope="session")
def _number_counter() -> Iterator[int]:
    return itertools.count(1000)


@pytest.fixture
def fresh_number(_number_counter: Iterator[int]) -> Callable[[], str]:
    """Phone numbers (+1 212 555 ....) no other test of this process uses: for tests on a shared server."""
    return lambda: f"+1212555{next(_number_counter):04d}"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: a worker per core and one more, unless PYTEST_XDIST_AUTO_NUM_WORKERS says otherwise.

    Most tests wait now and then (for a server to start, a quiet period, a commit): one worker more
    than cores keeps the cores busy meanwhile. More than that only adds collection and contention
    (measured on two cores: 3 workers took 72 s where 2 took 77 s and 4 took 72 s, with more CPU).
    """
    if "PYTEST_XDIST_AUTO_NUM_WORKERS" in os.environ:
        return None  # xdist's own hook reads it
    return len(os.sched_getaffinity(0)) + 1


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` start first, longest first; a module's users of module-scoped fixtures stay together.

    The slow ones (`seconds` each, about, alone on a quiet machine) then overlap everything else
    instead of running last and alone. A module-scoped fixture (a shared server) is made once per
    worker that runs one of its tests: with `--dist loadgroup` the xdist_group mark keeps them on one.
    """
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        definitions = info.name2fixturedefs.values() if info is not None else []
        if any(defs and defs[-1].scope == "module" for defs in definitions):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items.sort(key=lambda item: -(mark.kwargs.get("seconds", 1) if (mark := item.get_closest_marker("slow")) else 0))


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    """A path for a fresh vault (created by the service on first start)."""
    return tmp_path / "vault"


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start servers on fresh or given vaults; all are stopped at the end of the test."""
    started: list[LiveServer] = []

    def start(vault: Path | None = None, **extra: str) -> LiveServer:
        vault = vault or tmp_path / "vault"
        server = LiveServer(vault=vault, env=base_env(vault, **extra), log_path=tmp_path / f"server{len(started)}.log")
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory) -> LiveServer:  # type: ignore[no-untyped-def]
    """A running server on a fresh vault."""
    return server_factory()


# Linux lets a program's arguments and environment take a quarter of the stack limit, never less than
# 128 KiB: 2 MiB under the usual 8 MiB stack, which 100,000 file names overflow. Under a 512 KiB stack
# the room is 128 KiB, which 10,000 file names overflow the same way ("Argument list too long").
SMALL_STACK_BYTES = 512 * 1024
ARGUMENT_ROOM_BYTES = 128 * 1024


def argument_bytes(args: list[str]) -> int:
    """The room `args` take as a program's arguments: each string, its NUL and its pointer."""
    return sum(len(arg.encode()) + 1 + 8 for arg in args)


def _stack_in_use() -> int:
    """Bytes of this process's main stack mapped so far (it never shrinks)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmStk:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def small_argument_room() -> Iterator[int]:
    """Lower the soft stack limit to 512 KiB for one test; yields the 128 KiB left for a program's arguments.

    The limit is checked when a program is started, and every process started meanwhile (the worker,
    a CLI, git) inherits it: a command line that grows with the number of files fails with a tenth of
    the files it takes on a default machine, so the scale tests prove the same with a tenth of them.
    Only the main thread's stack is bound by it (threads' stacks are sized when the process starts),
    and what this test process already uses of it is checked to leave ample room.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if hard != resource.RLIM_INFINITY and hard < SMALL_STACK_BYTES:
        pytest.fail(f"the hard stack limit ({hard} bytes) is below {SMALL_STACK_BYTES}")
    in_use = _stack_in_use()
    assert in_use < SMALL_STACK_BYTES // 2, f"this process already uses {in_use} bytes of stack"
    resource.setrlimit(resource.RLIMIT_STACK, (SMALL_STACK_BYTES, hard))
    try:
        yield ARGUMENT_ROOM_BYTES
    finally:
        resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- helpers for the write-path tests (post-call, tool, API, CLI, import) --------------------------


def elevenlabs_signature(body: bytes, secret: str = ELEVENLABS_SECRET, timestamp: int | None = None) -> str:
    """An `ElevenLabs-Signature` header for `body`, computed as ElevenLabs does: t=<unix>,v0=<hex hmac>."""
    import hashlib
    import hmac

    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v0={digest}"


def vault_snapshot(vault: Path) -> dict[str, bytes]:
    """Every file of a vault outside `.git`, by vault-relative path, with its bytes."""
    return {
        path.relative_to(vault).as_posix(): path.read_bytes()
        for path in sorted(vault.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(vault).parts
    }


def vault_head(vault: Path) -> str:
    """The vault's current commit id."""
    return git(vault, "rev-parse", "HEAD").strip()


def commits_since(vault: Path, since: str) -> list[str]:
    """Full messages of the commits after `since`, oldest first."""
    out = git(vault, "log", "--reverse", "--format=%B%x1e", f"{since}..HEAD")
    return [message.strip() for message in out.split("\x1e") if message.strip()]


def run_cli(vault: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`python -m server.cli --env-file /dev/null --vault VAULT ARGS...` with the test environment."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "--env-file", os.devnull, "--vault", str(vault), *args],
        env={**os.environ, **base_env(vault, **extra)},
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
