"""Running git in one vault: our identity and config alone, input on stdin, a stale lock recovered.

Every git command of the service starts here. In the server the commands are started by the worker
process (`server.worker`), so the server itself never forks; without it they run in process. The
identity comes from settings, never from the machine's git configuration.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from server.remote import without_credentials

if TYPE_CHECKING:
    from server.worker import Worker

log = logging.getLogger("memory_bridge.git")

_LOCK_STALE_SECONDS = 2.0
_LOCK_WAIT_SECONDS = 10.0

_CONFIG = (
    "-c",
    "commit.gpgsign=false",
    "-c",
    "core.quotepath=off",
    # Index version 4 and the untracked cache: `git add` and `git commit` on a vault of thousands of
    # caller files take about half the time.
    "-c",
    "feature.manyFiles=true",
    # One thread: git runs beside a server answering calls, and must not take every core for a
    # moment (preloading the index starts up to 20 threads).
    "-c",
    "core.preloadIndex=false",
    "-c",
    "index.threads=1",
    # No housekeeping after each commit (`git commit` would start `git maintenance` every time and,
    # now and then, a repack in the middle of a burst of calls): the writer runs it when quiet.
    "-c",
    "maintenance.auto=false",
    "-c",
    "gc.auto=0",
)


# The machine's git variables are dropped, but for how to reach a remote over ssh (SPEC §11).
_PASSED_THROUGH = frozenset({"GIT_SSH_COMMAND", "GIT_SSH", "GIT_SSH_VARIANT"})
# A fetch or push that has not finished by then is stopped: a slow remote must not hold up the next try.
NETWORK_TIMEOUT_SECONDS = 60.0
# `nice(1)`, part of coreutils; without it, network commands run at the server's own priority.
_NICE = shutil.which("nice")
# Below the server's priority, but above the worker's (19): a fetch or push starved on a busy machine
# would hold up another replica's view (SPEC §10 has a figure for it), and neither is on the call path.
NETWORK_NICENESS = 10
# The exit code `_spawn_here` gives a command it stopped for taking too long (no git exits with it).
_TIMED_OUT = -1000


class GitError(RuntimeError):
    """A git command failed; the message has git's own words, without a remote's credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(without_credentials(message))


class GitRunner:
    """Starts git commands in one vault."""

    def __init__(self, root: Path, author_name: str, author_email: str) -> None:
        self.root = root
        # The worker process that starts the commands (the server's); None: they start here.
        self.worker: Worker | None = None
        self.lock_recoveries = 0
        # Identity and config from us alone: no global or system git config can change behaviour.
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _PASSED_THROUGH},
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_LITERAL_PATHSPECS": "1",  # a file named `[ab].md` or `*.md` is that file, not a pattern
            # A new vault's .git gets no templates: no sample hooks (executables) or description, only
            # what git needs, each file 0600 (objects 0400) under the service's umask.
            "GIT_TEMPLATE_DIR": "",
            "LC_ALL": "C",
        }

    def args(self, *args: str) -> list[str]:
        """The command line of a git command in this vault."""
        return ["git", "-C", str(self.root), *_CONFIG, *args]

    def run_sync(
        self, *args: str, check: bool = True, stdin: str = "", timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run git and wait (start-up, the CLI and tests; never on a request path); `stdin` is its input.

        Like the writer task, waits out (or recovers from) an `index.lock` left by a crash.
        """
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        while True:
            try:
                proc = subprocess.run(
                    self.args(*args),
                    env=self._env,
                    input=stdin,
                    capture_output=True,
                    text=True,
                    check=False,
                    process_group=0,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise GitError(f"git {_subcommand(args)} gave no answer within {timeout:.0f} s") from None
            if proc.returncode == 0 or "index.lock" not in proc.stderr or time.monotonic() > deadline:
                break
            self.recover_lock()
            time.sleep(0.05)
        command = _subcommand(args)
        if check and proc.returncode != 0 and not (command == "add" and _only_ignored(proc.stderr)):
            raise GitError(f"git {command} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    async def run(self, *args: str, ok: tuple[int, ...] = (0,), stdin: bytes = b"") -> tuple[int, str]:
        """Run git (in the worker process when there is one); its exit code and output. Raises GitError."""
        # asyncio and the worker are imported where they are used: the merge driver, which git starts
        # once per conflicting file, runs git through this module and must start fast.
        import asyncio

        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        while True:
            code, out, err = await self._spawn(self.args(*args), stdin)
            text = (err or out).decode(errors="replace").strip()
            if code in ok or (_subcommand(args) == "add" and _only_ignored(text)):
                return code, out.decode(errors="replace")
            if "index.lock" in text and time.monotonic() < deadline:
                self.recover_lock()
                await asyncio.sleep(0.05)
                continue
            raise GitError(f"git {_subcommand(args)} failed: {text}")

    async def run_network(
        self, *args: str, ok: tuple[int, ...] = (0,), timeout: float = NETWORK_TIMEOUT_SECONDS
    ) -> tuple[int, str]:
        """Run a git command that talks to the remote (fetch, push, ls-remote): its exit code and output.

        Started here, not in the worker process, so that a remote that takes its time never holds up
        the worker's commits; Python starts it with vfork, which does not stall the event loop the way
        a fork of the whole server would. Stopped after `timeout` seconds. Raises GitError (whose
        message never holds the remote's credentials).
        """
        # At a low priority, like every other git command of the service: on a busy machine a fetch
        # (unpacking objects) or a push (packing them) yields the CPU to answering calls. Through
        # `nice(1)`, so that Python still starts it with vfork.
        nice = [_NICE, "-n", str(NETWORK_NICENESS)] if _NICE else []
        code, out, err = await self._spawn_here([*nice, *self.args(*args)], b"", timeout)
        if code == _TIMED_OUT:
            raise GitError(f"git {_subcommand(args)} gave no answer within {timeout:.0f} s")
        if code not in ok:
            text = (err or out).decode(errors="replace").strip()
            raise GitError(f"git {_subcommand(args)} failed: {text}")
        return code, out.decode(errors="replace")

    async def run_files(self, *args: str, stdin: Path | None = None, stdout: Path | None = None) -> None:
        """Run git with its input read from, or its output written to, a file; raises GitError.

        For streams that may be bigger than memory (a history rewrite's export and import). Started
        here, like a network command: it may run for a while and must not hold up the worker.
        """
        import asyncio

        with open(stdin or os.devnull, "rb") as source, open(stdout or os.devnull, "wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                *self.args(*args),
                env=self._env,
                stdin=source,
                stdout=sink,
                stderr=asyncio.subprocess.PIPE,
                process_group=0,
            )
            _, err = await proc.communicate()
        if proc.returncode != 0:
            raise GitError(f"git {_subcommand(args)} failed: {err.decode(errors='replace').strip()}")

    async def _spawn(self, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:

        from server.worker import WorkerError, WorkerGone

        if self.worker is not None:
            # Started by the worker process: forking the server itself would stall its calls.
            try:
                ran = await self.worker.run(argv, self._env, stdin)
                return ran.returncode, ran.stdout, ran.stderr
            except WorkerGone as exc:
                log.warning("running git in process: %s", exc)
            except WorkerError as exc:  # the worker could not start git at all
                raise GitError(str(exc)) from None
        return await self._spawn_here(argv, stdin, None)

    async def _spawn_here(self, argv: list[str], stdin: bytes, timeout: float | None) -> tuple[int, bytes, bytes]:
        """Start git from this process; after `timeout` seconds it is killed and the code is _TIMED_OUT."""
        import asyncio  # here, not at the top: the merge driver imports this module and must start fast

        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=self._env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group: a Ctrl+C meant for the server must not kill a commit half-way.
            # (Unlike a new session, this still lets Python spawn with vfork.)
            process_group=0,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return _TIMED_OUT, b"", b""
        return proc.returncode or 0, out, err

    def merge_file(self, base: str, ours: str, theirs: str, marker_size: int) -> str:
        """`git merge-file --diff3` of three texts: the merged text, each conflict marked with all three versions.

        Needs no repository. Bytes that are not UTF-8 travel as surrogate escapes and come back as they were.
        """
        with tempfile.TemporaryDirectory(prefix="memory-bridge-merge-") as tmp:
            paths = []
            for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
                path = Path(tmp) / name
                path.write_bytes(text.encode("utf-8", "surrogateescape"))
                paths.append(str(path))
            labels = ("-L", "ours", "-L", "base", "-L", "theirs")
            argv = self.args("merge-file", "-p", "--diff3", f"--marker-size={marker_size}", *labels, *paths)
            proc = subprocess.run(argv, env=self._env, capture_output=True, check=False, process_group=0)
        # The exit code counts the conflicts (up to 127); an error is negative (255).
        if not 0 <= proc.returncode <= 127:
            raise GitError(f"git merge-file failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout.decode("utf-8", "surrogateescape")

    def settle_lock(self) -> None:
        """At start-up: wait for an `index.lock` to go, and remove it once it is stale (a crash left it).

        Without this, a lock left by a killed git stays until the next write trips over it: nothing at
        start-up may need the index, and `git status` just works around a lock.
        """
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        lock = self.root / ".git" / "index.lock"
        while lock.exists() and time.monotonic() < deadline:
            self.recover_lock()
            time.sleep(0.05)

    def recover_lock(self) -> None:
        """Remove an `index.lock` that has not moved for a while: a crash left it."""
        # Only this writer runs git in the vault, so a lock that has not moved for a while was left
        # by a crash (ours or a person's git); a live git holding it briefly just makes us wait.
        lock = self.root / ".git" / "index.lock"
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > _LOCK_STALE_SECONDS:
            lock.unlink(missing_ok=True)
            self.lock_recoveries += 1
            log.warning("removed a stale .git/index.lock (%.1f s old)", age)


def _subcommand(args: tuple[str, ...]) -> str:
    """`status` of `-c key=value status ...` (or of `--work-tree=... status ...`)."""
    while len(args) > 1 and (args[0] == "-c" or args[0].startswith("--work-tree=")):
        args = args[2:] if args[0] == "-c" else args[1:]
    return args[0]


def _only_ignored(text: str) -> bool:
    # `git add` of a path the vault's .gitignore covers stages the other paths and exits 1. The person
    # chose not to track that file: not a failure (else it would be retried, and fail, forever).
    text = text.strip()
    return text.startswith("The following paths are ignored") and "fatal:" not in text and "error:" not in text
