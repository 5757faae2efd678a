"""Shipping it (SPEC §15): the image built from the Dockerfile, its entry point serving a vault on a
volume (in a container, and in a chroot of the image's root for machines where containers cannot
start); the systemd unit checked by `systemd-analyze verify`, the Caddyfiles by `caddy validate`.

No container registry is reachable here, so the image's base is made from Debian's packages
(`scripts/build-base-image`). The first run installs the tools, makes the base and builds the image
(minutes); the base and the image's layers stay in podman's storage, outside the project, so later
runs take seconds. The image is built once per test process, and two processes take turns.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from tests.conftest import ADMIN_KEY, AGENT_NUMBER, MARIA, OTHER, PHONE_HASH_KEY, WEBHOOK_SECRET, free_port, git
from tests.live_helpers import MARIA_KEY, OTHER_KEY
from tests.test_filemodes import expected_mode, modes

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/memory-bridge"
# The first run makes the base and builds the image: mmdebstrap and pip install, on a busy machine.
FIRST_BUILD_SECONDS = 1800
# podman asks the runtime for limits above this machine's hard ones by default, which only a process
# with CAP_SYS_RESOURCE may set; lower ones need no privilege.
LIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
# The service's own settings for the runs; HOST, PORT and VAULT_DIR come from the image.
SECRETS = {
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
    "ADMIN_API_KEY": ADMIN_KEY,
    "PHONE_HASH_KEY": PHONE_HASH_KEY,
    "AGENT_NUMBERS": AGENT_NUMBER,
}
FACTS = {MARIA: "Prefers morning appointments", OTHER: "Calls about the invoice"}
FILES = {MARIA: f"callers/{MARIA_KEY[:12]}.md", OTHER: f"callers/{OTHER_KEY[:12]}.md"}


def run(*cmd: str | Path, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure with `check`, fail the test with its output."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@contextlib.contextmanager
def taking_turns(name: str) -> Iterator[None]:
    """Hold a machine-wide lock: two test processes building or mounting the same image take turns."""
    with open(f"/run/lock/memory-bridge-{name}", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def image_id(name: str) -> str | None:
    """The id of an image by name, None if there is none."""
    result = run("podman", "image", "inspect", "--format", "{{.Id}}", name, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


# -- fixtures: the tools, the image, its root and configuration ------------------------------------


@pytest.fixture(scope="module")
def system_tools() -> None:
    """podman, runc, mmdebstrap, caddy and systemd-analyze, installed from Debian's packages if missing."""
    run(ROOT / "scripts" / "install-system-tools", timeout=900)


def build_inputs_hash(base: str) -> str:
    """A hash of everything the build reads: the base, the Dockerfile, .dockerignore, what it copies in."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    sources = sorted(
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    )
    digest = hashlib.sha256(f"{base}\n{dockerfile}\n{(ROOT / '.dockerignore').read_text()}".encode())
    for source in sources:
        top = ROOT / source
        for path in sorted([top] if top.is_file() else top.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(f"\n{path.relative_to(ROOT)}\n".encode() + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def image(system_tools: None) -> str:
    """The project's Dockerfile built on a base made from Debian's packages; built again only when an input changed.

    podman's layer cache alone still takes seconds to go through the steps: the image is named after
    its inputs instead, and one made from the same inputs is taken as it is.
    """
    with taking_turns("image-build"):
        base = run(ROOT / "scripts" / "build-base-image", timeout=FIRST_BUILD_SECONDS).stdout.split()[-1]
        name = f"{IMAGE}:test-{build_inputs_hash(base)}"
        if image_id(name) is None:
            run(
                "podman", "build", "--isolation=chroot", "--format=docker", "--build-arg", f"BASE={base}",
                "--tag", name, ROOT, timeout=FIRST_BUILD_SECONDS,
            )  # fmt: skip
            # Earlier inputs' images go (their layers stay in podman's cache while a later build uses them).
            listed = run("podman", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={IMAGE}")
            stale = [tag for tag in listed.stdout.split() if tag.startswith(f"{IMAGE}:test-") and tag != name]
            if stale:
                run("podman", "rmi", *stale, check=False)
    return name


@pytest.fixture(scope="module")
def config(image: str) -> dict[str, Any]:
    """The image's configuration: entry point, command, environment, user, volumes, health check."""
    inspected = json.loads(run("podman", "image", "inspect", image).stdout)[0]
    return {**inspected["Config"], "Healthcheck": inspected["Healthcheck"]}


@pytest.fixture(scope="module")
def image_root(image: str) -> Iterator[Path]:
    """The image's root file system, mounted read-only for the length of the module."""
    with taking_turns("image-mount"):
        root = Path(run("podman", "image", "mount", image).stdout.strip())
    yield root
    with taking_turns("image-mount"):
        run("podman", "image", "unmount", image, check=False)


def image_user(root: Path, config: dict[str, Any]) -> tuple[int, int]:
    """The uid and gid of the image's user, from its own /etc/passwd."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        name, _, uid, gid, *_ = line.split(":")
        if name == config["User"]:
            return int(uid), int(gid)
    raise AssertionError(f"the image has no user {config['User']!r}")


def image_env(config: dict[str, Any]) -> dict[str, str]:
    """The image's environment as a mapping."""
    return dict(item.split("=", 1) for item in config["Env"])


# -- what every run of the image must do ------------------------------------------------------------


def wait_healthy(url: str, alive: Any, timeout: float = 60) -> dict[str, Any]:
    """Poll /health until it answers 200; `alive()` false means the server is gone (fail at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert alive(), "the service exited before /health answered"
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(f"{url}/health", timeout=2)
            if response.status_code == 200:
                return dict(response.json())
        time.sleep(0.1)
    raise AssertionError("/health did not answer in time")


def serve_and_write(url: str, vault: Path) -> None:
    """Facts written and committed in the volume's vault, then calls answered (recorded at the latest on stop)."""
    with httpx.Client(base_url=url, timeout=10) as client:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        for number, fact in FACTS.items():
            saved = client.post(f"/api/memory/{quote(number, safe='')}", json={"fact": fact}, headers=admin)
            key = MARIA_KEY if number == MARIA else OTHER_KEY
            assert saved.json() == {"status": "saved", "phone_hash": key, "file": FILES[number]}
            # Acknowledged once committed: the commit is in the vault on the volume already.
            assert f"- {fact}\n" in safe_git(vault, "show", f"HEAD:{FILES[number]}")
        for number in FACTS:
            call = {"caller_id": number, "called_number": AGENT_NUMBER, "call_sid": f"CA-{number[-4:]}"}
            bearer = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
            answer = client.post("/webhook/personalize", json=call, headers=bearer)
            assert answer.status_code == 200
            variables = answer.json()["dynamic_variables"]
            assert variables["caller_known"] is True
            assert variables["caller_memory"].endswith(f"- Fact: {FACTS[number]}")


def assert_stopped_cleanly(vault: Path, uid: int) -> None:
    """After SIGTERM: every answered call recorded and committed, nothing left uncommitted, modes private."""
    found = modes(vault)
    assert {p: oct(m) for p, m in found.items() if m != expected_mode(p, (vault / p).is_dir())} == {}
    assert {(vault / p).lstat().st_uid for p in found} == {uid}
    for number in FACTS:
        text = safe_git(vault, "show", f"HEAD:{FILES[number]}")
        assert "\ncall_count: 1\n" in text, text
        assert f"- {FACTS[number]}\n" in text
    assert safe_git(vault, "status", "--porcelain", "--untracked-files=all") == ""
    log = safe_git(vault, "log", "--format=%s")
    assert "create the vault" in log


def safe_git(vault: Path, *args: str) -> str:
    """git in a vault another user (the image's) owns, reading only (no index refresh written as root)."""
    return git(vault, "--no-optional-locks", "-c", "safe.directory=*", *args)


# -- the image --------------------------------------------------------------------------------------


@pytest.mark.timeout(FIRST_BUILD_SECONDS)
def test_the_image_runs_the_service_as_its_own_user_with_a_vault_volume_and_no_dev_tools(
    config: dict[str, Any], image_root: Path
) -> None:
    assert config["User"] == "memory-bridge"
    assert image_user(image_root, config)[0] != 0
    assert config["Entrypoint"] == ["tini", "--", "memory-bridge"]
    assert config["Cmd"] == ["serve"]
    assert config["StopSignal"] == "SIGTERM"
    assert list(config["Volumes"]) == ["/vault"]
    env = image_env(config)
    assert (env["VAULT_DIR"], env["HOST"], env["PORT"]) == ("/vault", "0.0.0.0", "8000")
    assert "WEBHOOK_SECRET" not in env
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "/health" in " ".join(config["Healthcheck"]["Test"])
    vault = image_root / "vault"
    assert (vault.stat().st_uid, oct(vault.stat().st_mode & 0o777)) == (image_user(image_root, config)[0], "0o700")
    assert list(vault.iterdir()) == []
    # The service and its dependencies; no test tools, installers or the project's tests.
    site = image_root / "opt" / "memory-bridge" / "lib" / "python3.11" / "site-packages"
    for present in ("server/routes", "server/templates", "litestar", "uvicorn", "watchfiles", "phonenumbers"):
        assert (site / present).is_dir(), present
    for absent in ("pytest", "_pytest", "ruff", "mypy", "hypothesis", "schemathesis", "xdist", "pip", "setuptools"):
        assert not (site / absent).exists(), absent
    assert not (site / "tests").exists()
    assert (image_root / "opt" / "memory-bridge" / "bin" / "memory-bridge").is_file()
    for tool in ("usr/bin/git", "usr/bin/tini"):
        assert (image_root / tool).is_file(), tool


def container_runtime(image: str) -> str | None:
    """The first OCI runtime podman starts a container with here; None if none can."""
    # crun, podman's default, refuses a host that mounts cgroups v1 and v2 side by side; runc does not.
    for runtime in ("crun", "runc"):
        if shutil.which(runtime) is None:
            continue
        started = run(
            "podman", "run", "--rm", "--runtime", runtime, *LIMITS, "--network=none", "--entrypoint=true", image,
            check=False,
        )  # fmt: skip
        if started.returncode == 0:
            return runtime
    return None


@pytest.mark.timeout(FIRST_BUILD_SECONDS)
def test_the_image_serves_a_vault_on_a_volume_in_a_container_and_stops_losing_nothing(
    image: str, config: dict[str, Any], image_root: Path
) -> None:
    runtime = container_runtime(image)
    if runtime is None:
        pytest.skip("podman cannot start containers on this machine: the chroot test runs the entry point")
    name = f"memory-bridge-test-{os.getpid()}"
    port = free_port()
    run("podman", "volume", "create", name)
    try:
        env = [arg for key, value in SECRETS.items() for arg in ("--env", f"{key}={value}")]
        run(
            "podman", "run", "--detach", "--name", name, "--runtime", runtime, *LIMITS,
            "--publish", f"127.0.0.1:{port}:8000", "--volume", f"{name}:/vault", *env, image,
        )  # fmt: skip
        vault = Path(run("podman", "volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout.strip())

        def alive() -> bool:
            return run("podman", "inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"

        assert wait_healthy(f"http://127.0.0.1:{port}", alive)["status"] == "ok"
        serve_and_write(f"http://127.0.0.1:{port}", vault)
        # The image's own health check, as the engine runs it.
        assert run("podman", "healthcheck", "run", name, check=False).returncode == 0

        run("podman", "stop", "--time", "60", name, timeout=90)
        # uvicorn re-raises SIGTERM once it has shut down: tini reports the signal (128 + 15).
        assert run("podman", "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "143"
        logs = run("podman", "logs", name).stderr + run("podman", "logs", name).stdout
        assert "Application shutdown complete." in logs
        assert "Traceback" not in logs
        assert MARIA not in logs and OTHER not in logs
        assert_stopped_cleanly(vault, image_user(image_root, config)[0])
    finally:
        run("podman", "rm", "--force", name, check=False)
        run("podman", "volume", "rm", "--force", name, check=False)


# -- the chroot of the image's root (where containers cannot start) -------------------------------

# Runs in new mount and PID namespaces, so the entry point is PID 1, as in a container, and the
# mounts go away with it; the image's root stays read-only (a tmpfs for /tmp, as a container's layer).
_CHROOT = (
    'root="$1" volume="$2" vault="$3" workdir="$4" user="$5"; shift 5; '
    'mount --bind "$vault" "$root$volume"; mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"; '
    'mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"; '
    'exec chroot --userspec="$user" "$root" env -i --chdir="$workdir" "$@"'
)


@contextlib.contextmanager
def chroot_entry_point(
    root: Path, config: dict[str, Any], vault: Path, log: Path, **overrides: str
) -> Iterator[subprocess.Popen[bytes]]:
    """The image's entry point and command, as its user, in a chroot of its root, `vault` on its volume."""
    uid, gid = image_user(root, config)
    os.chown(vault, uid, gid)
    vault.chmod(0o700)
    env = {**image_env(config), **overrides}
    (volume,) = config["Volumes"]
    command = [
        "unshare", "--mount", "--pid", "--fork", "--kill-child", "--", "sh", "-ec", _CHROOT, "sh",
        str(root), volume, str(vault), config["WorkingDir"], f"{uid}:{gid}",
        *(f"{key}={value}" for key, value in env.items()), *config["Entrypoint"], *config["Cmd"],
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def entry_point_pid(unshare: subprocess.Popen[bytes]) -> int:
    """The host pid of the entry point (PID 1 of its namespace): the process unshare started."""
    found = run("pgrep", "--parent", str(unshare.pid)).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


@pytest.mark.timeout(FIRST_BUILD_SECONDS)
def test_the_image_entry_point_serves_in_a_chroot_of_the_image_and_stops_losing_nothing(
    config: dict[str, Any], image_root: Path, tmp_path: Path
) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    port = free_port()
    # This machine's network, not a container's: loopback only, as every test server here.
    overrides = {**SECRETS, "HOST": "127.0.0.1", "PORT": str(port)}
    with chroot_entry_point(image_root, config, vault, tmp_path / "serve.log", **overrides) as proc:
        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, lambda: proc.poll() is None)["status"] == "ok"
        serve_and_write(url, vault)
        # The image's health check, run as the engine would: inside, as its user.
        health = subprocess.run(
            ["nsenter", "--target", str(entry_point_pid(proc)), "--mount", "--",
             "chroot", "--userspec={}:{}".format(*image_user(image_root, config)), str(image_root),
             "env", "-i", *(f"{k}={v}" for k, v in {**image_env(config), **overrides}.items()),
             *config["Healthcheck"]["Test"][1:]],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert health.returncode == 0, health.stderr
        os.kill(entry_point_pid(proc), signal.SIGTERM)  # what `docker stop` sends to PID 1
        assert proc.wait(timeout=60) == 143
    logs = (tmp_path / "serve.log").read_text()
    assert "Application shutdown complete." in logs
    assert "Traceback" not in logs
    assert MARIA not in logs and OTHER not in logs
    assert_stopped_cleanly(vault, image_user(image_root, config)[0])


@pytest.mark.timeout(FIRST_BUILD_SECONDS)
def test_the_image_refuses_to_listen_on_all_interfaces_without_webhook_secret(
    config: dict[str, Any], image_root: Path, tmp_path: Path
) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    log = tmp_path / "serve.log"
    secrets = {key: value for key, value in SECRETS.items() if key != "WEBHOOK_SECRET"}
    with chroot_entry_point(image_root, config, vault, log, **secrets) as proc:
        assert proc.wait(timeout=60) == 2
    assert "HOST is 0.0.0.0, which other machines can reach, but WEBHOOK_SECRET is not set" in log.read_text()
    assert list(vault.iterdir()) == []


# -- the systemd unit and the Caddyfiles ----------------------------------------------------------


def unit_settings(path: Path) -> dict[str, str]:
    """The [Service] settings of a unit file (the last value of each key)."""
    settings: dict[str, str] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings[key] = value
    return settings


def test_the_systemd_unit_is_hardened_and_passes_systemd_analyze_verify(system_tools: None, tmp_path: Path) -> None:
    unit = ROOT / "deploy" / "memory-bridge.service"
    settings = unit_settings(unit)
    assert settings["User"] == "memory-bridge"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"] == "/var/lib/memory-bridge"
    assert "VAULT_DIR=/var/lib/memory-bridge/vault" in settings["Environment"].split()
    assert "HOST=127.0.0.1" in settings["Environment"].split()
    assert (settings["NoNewPrivileges"], settings["PrivateTmp"], settings["Restart"]) == ("yes", "yes", "on-failure")
    assert (settings["StandardOutput"], settings["StandardError"]) == ("journal", "journal")
    assert settings["UMask"] == "0077"
    assert settings["KillMode"] == "mixed"
    # An alternative root holding systemd's own units and the program the unit starts (a stand-in:
    # verify checks that it is there and executable); the machine's own /opt is left alone.
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    program = root / settings["ExecStart"].split()[0].lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    installed = root / "etc/systemd/system/memory-bridge.service"
    installed.parent.mkdir(parents=True)
    shutil.copy(unit, installed)
    verified = run("systemd-analyze", "verify", f"--root={root}", "--man=no", installed, check=False)
    # verify warns about unknown keys and bad values but exits 0: any output is a failure too.
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")


def caddy_validate(caddyfile: Path, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`caddy validate` on a Caddyfile, with its storage in `home`, not the machine's."""
    environ = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home)}
    return subprocess.run(
        ["caddy", "validate", "--config", str(caddyfile), "--adapter", "caddyfile"],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_caddy_validates_the_caddyfile_and_the_one_compose_uses(system_tools: None, tmp_path: Path) -> None:
    own = caddy_validate(ROOT / "deploy" / "Caddyfile", tmp_path)
    assert own.returncode == 0, own.stderr
    assert "Valid configuration" in own.stdout + own.stderr

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service, caddy = compose["services"]["memory-bridge"], compose["services"]["caddy"]
    (mounted,) = [v.split(":")[0] for v in caddy["volumes"] if v.split(":")[1] == "/etc/caddy/Caddyfile"]
    used = (ROOT / mounted).resolve()
    assert used == ROOT / "deploy" / "compose.Caddyfile"
    assert "memory-bridge:8000" in used.read_text()
    assert (service["build"], service["volumes"], service["environment"]["HOST"]) == (".", ["vault:/vault"], "0.0.0.0")
    assert caddy["environment"]["DOMAIN"].startswith("${DOMAIN:?")
    valid = caddy_validate(used, tmp_path, DOMAIN="memory.example.com")
    assert valid.returncode == 0, valid.stderr
    # Without a domain there is no site to serve: refused, as compose refuses to start without one.
    assert caddy_validate(used, tmp_path).returncode != 0
