"""The git writer: the only code that runs git (SPEC §3).

One writer task per vault drains a queue of commit requests. Requests that arrive while a commit is
running are committed together in the next one (one commit per source, each change listed), which is
what lets many concurrent writers be acknowledged quickly without one `git commit` each.
The identity comes from settings, never from the machine's git configuration. In the server, the
commands are started by the worker process (`server.worker`), so the server itself never forks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from server.gitlock import WriterLock
from server.worker import Worker, WorkerError, WorkerGone

log = logging.getLogger("memory_bridge.git")

SOURCES = ("api", "webhook", "tool", "cli", "hand-edit")
_LOCK_STALE_SECONDS = 2.0
_BATCH_WINDOW_SECONDS = 0.005
_LOCK_WAIT_SECONDS = 10.0
# A commit message lists at most this many changes, then says how many more: a message (and its
# memory) must not grow with a commit of a hundred thousand files.
MAX_LISTED = 200
# Up to this many files are staged by `git add` (whose pathspec matching costs files x index
# entries); more go to `git update-index`, which looks each path up once.
_ADD_MAX_PATHS = 64
# Paths and messages go to git on stdin, NUL-separated: no command line grows with a commit.
_PATHS_FROM_STDIN = ("--pathspec-from-file=-", "--pathspec-file-nul")


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
# Housekeeping (`git gc --auto`: pack loose objects once there are many) runs after this long
# without a commit, in the background, at the worker's low priority.
_HOUSEKEEPING_IDLE_SECONDS = 30.0
_GC_AUTO = 6700  # git's own default threshold of loose objects
_KNOWN_BLOBS = 4_096


class GitError(RuntimeError):
    """A git command failed; the message has git's own words."""


@dataclass
class _Job:
    paths: list[str]
    lines: list[str]
    source: str
    done: asyncio.Future[str | None]
    exact: dict[str, Exact] | None = None


@dataclass(frozen=True)
class Exact:
    """One file's change as the service made it: the bytes it was made on and the bytes written.

    Committed as these bytes, not as whatever the file holds by the time git looks: a person may
    delete or edit the file in between, and that is their own change, with its own commit.
    """

    base: bytes | None  # None: the file did not exist
    data: bytes | None  # None: the change removed the file


def blob_id(data: bytes | None) -> str | None:
    """git's object id of a blob holding `data` (None for no file)."""
    if data is None:
        return None
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class _Retry:
    """Changes whose commit failed: their paths, and a bounded description of them."""

    paths: dict[str, None]
    lines: list[str]
    more: int = 0

    def add(self, paths: list[str], lines: list[str]) -> None:
        """Carry `paths` to the next commit; keep at most MAX_LISTED lines, count the rest."""
        self.paths.update(dict.fromkeys(paths))
        room = max(0, MAX_LISTED - len(self.lines))
        self.lines.extend(f"{line} (commit retried)" for line in lines[:room])
        self.more += max(0, len(lines) - room)


@dataclass
class GitStatus:
    """What `/health` reports about git."""

    last_commit: str | None = None
    last_commit_at: float | None = None
    last_error: str | None = None
    pending: int = 0
    lock_recoveries: int = 0


class GitWriter:
    """Serialises every git write of one vault."""

    def __init__(self, root: Path, author_name: str, author_email: str) -> None:
        self.root = root
        self.status = GitStatus()
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        # Changes whose commit failed: they stay on disk and ride along with the next commit.
        self._failed = _Retry({}, [])
        # Files a person changed whose hand-edit commit is still waiting for its quiet period.
        self.hand_edits: set[str] = set()
        self._worker: Worker | None = None
        # Another memory-bridge process (the CLI beside a running server) commits to the same vault.
        self.lock = WriterLock(root)
        # (commit, its tree) of the last commit this writer made or looked up: to see when there is nothing to commit.
        self._last_tree: tuple[str, str] | None = None
        # path -> blob this writer last committed there from exact bytes (saves asking git); recent paths only.
        self._blobs: OrderedDict[str, str | None] = OrderedDict()
        # Identity and config from us alone: no global or system git config can change behaviour.
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_LITERAL_PATHSPECS": "1",  # a file named `[ab].md` or `*.md` is that file, not a pattern
            "LC_ALL": "C",
        }

    # -- running git -----------------------------------------------------------------------------

    def _args(self, *args: str) -> list[str]:
        return ["git", "-C", str(self.root), *_CONFIG, *args]

    def run_sync(self, *args: str, check: bool = True, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run git and wait (start-up, the CLI and tests; never on a request path); `stdin` is its input.

        Like the writer task, waits out (or recovers from) an `index.lock` left by a crash.
        """
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        while True:
            proc = subprocess.run(
                self._args(*args),
                env=self._env,
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
                process_group=0,
            )
            if proc.returncode == 0 or "index.lock" not in proc.stderr or time.monotonic() > deadline:
                break
            self._recover_lock()
            time.sleep(0.05)
        command = _subcommand(args)
        if check and proc.returncode != 0 and not (command == "add" and _only_ignored(proc.stderr)):
            raise GitError(f"git {command} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    async def _run(self, *args: str, ok: tuple[int, ...] = (0,), stdin: bytes = b"") -> tuple[int, str]:
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        while True:
            code, out, err = await self._spawn(self._args(*args), stdin)
            text = (err or out).decode(errors="replace").strip()
            if code in ok or (_subcommand(args) == "add" and _only_ignored(text)):
                return code, out.decode(errors="replace")
            if "index.lock" in text and time.monotonic() < deadline:
                self._recover_lock()
                await asyncio.sleep(0.05)
                continue
            raise GitError(f"git {_subcommand(args)} failed: {text}")

    async def _spawn(self, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        if self._worker is not None:
            # Started by the worker process: forking the server itself would stall its calls.
            try:
                ran = await self._worker.run(argv, self._env, stdin)
                return ran.returncode, ran.stdout, ran.stderr
            except WorkerGone as exc:
                log.warning("running git in process: %s", exc)
            except WorkerError as exc:  # the worker could not start git at all
                raise GitError(str(exc)) from None
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
        out, err = await proc.communicate(stdin)
        return proc.returncode or 0, out, err

    def _recover_lock(self) -> None:
        # Only this writer runs git in the vault, so a lock that has not moved for a while was left
        # by a crash (ours or a person's git); a live git holding it briefly just makes us wait.
        lock = self.root / ".git" / "index.lock"
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > _LOCK_STALE_SECONDS:
            lock.unlink(missing_ok=True)
            self.status.lock_recoveries += 1
            log.warning("removed a stale .git/index.lock (%.1f s old)", age)

    # -- repository set-up -----------------------------------------------------------------------

    def ensure_repo(self) -> bool:
        """Make the vault a git repository of its own; True if it was created now."""
        if (self.root / ".git").exists():
            return False
        self.run_sync("init", "-q", "-b", "main")
        return True

    def _head_from_files(self) -> str | None:
        """The commit HEAD points to, read from .git without starting a process (None: ask git)."""
        try:
            head = (self.root / ".git" / "HEAD").read_text().strip()
            if head.startswith("ref: "):
                head = (self.root / ".git" / head[5:]).read_text().strip()
        except OSError:
            return None
        return head if len(head) == 40 else None

    def head(self) -> str | None:
        """The current commit id, or None before the first commit."""
        proc = self.run_sync("rev-parse", "--verify", "-q", "HEAD", check=False)
        return proc.stdout.strip() or None

    def dirty_paths(self) -> list[str]:
        """Paths with uncommitted changes (including untracked files), vault-relative."""
        # At start-up nothing is served yet: git may use every core to look at every file.
        threads = ("-c", "core.preloadIndex=true", "-c", "index.threads=true")
        with self.lock.hold():  # status refreshes the index: not while another process commits
            out = self.run_sync(*threads, "status", "--porcelain", "-z", "--untracked-files=all").stdout
        paths = []
        entries = out.split("\0")
        i = 0
        while i < len(entries):
            entry = entries[i]
            i += 1
            if len(entry) < 4:
                continue
            paths.append(entry[3:])
            if entry[0] in "RC":  # a rename carries its old path as the next entry
                paths.append(entries[i])
                i += 1
        return paths

    def commit_sync(self, paths: list[str], lines: list[str], source: str) -> str | None:
        """Commit `paths` now, outside the writer task (start-up and tests only)."""
        with self.lock.hold():
            self._recover_lock()
            self._stage_sync(paths)
            proc = self.run_sync("commit", "-q", "--no-verify", "-F", "-", check=False, stdin=message(lines, source))
        if proc.returncode != 0:
            if "nothing" in proc.stdout + proc.stderr:
                return None
            raise GitError(f"git commit failed: {(proc.stderr or proc.stdout).strip()}")
        sha = self.head()
        self._note_commit(sha, lines)
        return sha

    def _stage_sync(self, paths: list[str]) -> None:
        staging = self._staging(paths)
        if staging.added:
            self.run_sync("add", "-A", *_PATHS_FROM_STDIN, stdin=_nul(staging.added))
        files = staging.files
        if files:
            files = _not_ignored(files, self.run_sync(*_IGNORED).stdout)
        if files or staging.gone:
            self.run_sync(*_UPDATE_INDEX, stdin=_nul(files + staging.gone))

    async def _stage(self, paths: list[str]) -> None:
        staging = self._staging(paths)
        if staging.added:
            await self._run("add", "-A", *_PATHS_FROM_STDIN, stdin=_nul(staging.added).encode())
        files = staging.files
        if files:
            files = _not_ignored(files, (await self._run(*_IGNORED))[1])
        if files or staging.gone:
            await self._run(*_UPDATE_INDEX, stdin=_nul(files + staging.gone).encode())

    def _staging(self, paths: list[str]) -> _Staging:
        """How to stage `paths` (without repeats), each command's cost bounded by the paths given."""
        root = str(self.root)
        present: list[str] = []
        gone: list[str] = []
        for path in dict.fromkeys(paths):
            (present if os.path.lexists(os.path.join(root, path)) else gone).append(path)
        if len(present) <= _ADD_MAX_PATHS:
            return _Staging(added=present, files=[], gone=gone)
        # Many files (a person's `sed` over the vault, an import): `update-index`, once the paths the
        # vault ignores are left out as `git add` would; a folder (`.`) still needs `git add`.
        folders = {path for path in present if os.path.isdir(os.path.join(root, path))}
        files = [path for path in present if path not in folders] if folders else present
        return _Staging(added=list(folders), files=files, gone=gone)

    # -- the writer task -------------------------------------------------------------------------

    async def start(self, worker: Worker | None = None) -> None:
        """Start the writer task; with a `worker`, git runs in that process."""
        self._worker = worker
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop(), name="git-writer")

    async def stop(self) -> None:
        """Commit everything queued, then stop."""
        if self._queue is None or self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self.lock.close()

    @property
    def alive(self) -> bool:
        """Whether the writer task is running."""
        return self._task is not None and not self._task.done()

    async def commit(
        self, paths: list[str], lines: str | list[str], source: str, exact: dict[str, Exact] | None = None
    ) -> str | None:
        """Commit the changes to `paths`, each described by a line; returns once they are in git.

        Paths in `exact` are committed as exactly the change described there (after a `hand-edit`
        commit of its base, if that differs from git's version); the others as they are on disk.
        Returns the commit id, or None if there was nothing to commit. Raises GitError on failure;
        the file change itself stays on disk and is committed with the next write that succeeds.
        """
        if source not in SOURCES:
            raise ValueError(f"unknown commit source {source!r}")
        if self._queue is None:
            raise RuntimeError("the git writer is not running")
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.status.pending += 1
        await self._queue.put(_Job(paths, [lines] if isinstance(lines, str) else lines, source, done, exact))
        return await done

    async def commit_hand_edits(self, edits: dict[str, str]) -> None:
        """Commit people's changes to files (path -> "edited" or "removed") in one `Source: hand-edit` commit."""
        self.hand_edits.difference_update(edits)
        await self.commit(list(edits), [f"hand edit: {path} {what}" for path, what in edits.items()], "hand-edit")

    async def _loop(self) -> None:
        assert self._queue is not None
        commits_since_housekeeping = 0
        while True:
            try:
                jobs = [await asyncio.wait_for(self._queue.get(), _HOUSEKEEPING_IDLE_SECONDS)]
            except TimeoutError:
                if commits_since_housekeeping:
                    commits_since_housekeeping = 0
                    await self._housekeeping()
                continue
            commits_since_housekeeping += 1
            # A moment for writers acknowledged by the last commit to send their next write, so that
            # concurrent writers share commits instead of splitting into alternating halves.
            await asyncio.sleep(_BATCH_WINDOW_SECONDS)
            while not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            by_source: dict[str, list[_Job]] = {}
            for job in jobs:
                by_source.setdefault(job.source, []).append(job)
            for source, group in by_source.items():
                async with self.lock.held():
                    await self._commit_group(source, group)
            for _ in jobs:
                self._queue.task_done()

    async def _commit_group(self, source: str, jobs: list[_Job]) -> None:
        paths = [p for job in jobs for p in job.paths] + list(self._failed.paths)
        lines = [*(line for job in jobs for line in job.lines), *self._failed.lines]
        exact = {path: change for job in jobs for path, change in (job.exact or {}).items()}
        try:
            if exact:
                await self._bases_first(exact)
                await self._stage_exact({path: change.data for path, change in exact.items()})
            from_disk = [path for path in paths if path not in exact]
            for path in from_disk:
                self._blobs.pop(path, None)  # staged from disk: this writer no longer knows its blob
            await self._stage(from_disk)
            sha = await self._commit_index(message(lines, source, more=self._failed.more))
            self._note_commit(sha, lines)
            self.status.last_error = None
            self._failed = _Retry({}, [])
            self._know_blobs({path: blob_id(change.data) for path, change in exact.items()})
        except Exception as exc:  # any failure must reach the waiting writers, never stall them
            for path in exact:
                self._blobs.pop(path, None)
            self.status.last_error = str(exc)
            for job in jobs:
                self._failed.add(job.paths, job.lines)
            log.error("git commit failed (%d change(s) stay on disk, retried with the next commit): %s", len(jobs), exc)
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(GitError(str(exc)))
            self.status.pending -= len(jobs)
            return
        for job in jobs:
            if not job.done.done():
                job.done.set_result(sha)
        self.status.pending -= len(jobs)

    async def _bases_first(self, exact: dict[str, Exact]) -> None:
        """Commit, as a person's change, any base that is not what git has: a hand edit made just before ours."""
        unknown = [path for path in exact if path not in self._blobs]
        committed = {path: self._blobs[path] for path in exact if path in self._blobs}
        if unknown:
            committed.update(await self._index_blobs(unknown))
        behind = {path: change.base for path, change in exact.items() if blob_id(change.base) != committed[path]}
        if not behind:
            return
        lines = [f"hand edit: {path} {'edited' if base is not None else 'removed'}" for path, base in behind.items()]
        await self._stage_exact(behind)
        sha = await self._commit_index(message(lines, "hand-edit"))
        self._note_commit(sha, lines)
        log.info("committed %d hand edit(s) made just before the service's own change", len(behind))

    async def _index_blobs(self, paths: list[str]) -> dict[str, str | None]:
        """The blob git's index holds at each path (None: no entry), asked on stdin in one command."""
        found: dict[str, str | None] = dict.fromkeys(paths)
        # One name per line: a path with a line break in it is taken as unknown (its base is then
        # committed as a hand edit, which is only ever one commit too many).
        asked = [path for path in paths if "\n" not in path and "\0" not in path]
        if asked:
            out = (await self._run(*_INDEX_BLOBS, stdin=_nul([f":{path}" for path in asked]).encode()))[1]
            answers = out.splitlines()
            if len(answers) == len(asked):
                for path, answer in zip(asked, answers, strict=True):
                    found[path] = None if answer.endswith(" missing") else answer.strip()
        return found

    async def _stage_exact(self, contents: dict[str, bytes | None]) -> None:
        """Put these bytes (None: no file) in git's index for these paths, whatever the files hold now.

        The bytes are laid out as a private work tree in `.git/`, which no person edits, and one
        `update-index` reads it: it writes each blob, sets each entry, and removes the paths whose
        file is absent there, all from paths on stdin.
        """
        stage = self.root / ".git" / "memory-bridge" / "stage"
        await asyncio.to_thread(_lay_out, stage, contents)
        try:
            await self._run(f"--work-tree={stage}", *_UPDATE_INDEX, stdin=_nul(list(contents)).encode())
        finally:
            # Only one process stages at a time (the writer lock is held), so the folder is ours.
            await asyncio.to_thread(shutil.rmtree, stage, True)

    def _know_blobs(self, blobs: dict[str, str | None]) -> None:
        for path, blob in blobs.items():
            self._blobs[path] = blob
            self._blobs.move_to_end(path)
        while len(self._blobs) > _KNOWN_BLOBS:
            self._blobs.popitem(last=False)

    async def _commit_index(self, text: str) -> str | None:
        """Commit what is staged; returns the new commit, or None when the tree is HEAD's already.

        Plumbing rather than `git commit`, which would first stat every file of the vault to refresh
        the index (thousands of callers) and then start git's housekeeping: a third of the cost.
        """
        tree = (await self._run("write-tree"))[1].strip()
        parent = await self._head()
        if parent is not None and tree == await self._tree_of(parent):
            return None  # nothing to commit: a person's git, or an earlier batch, already has it
        parents = ("-p", parent) if parent is not None else ()
        sha = (await self._run("commit-tree", tree, *parents, "-F", "-", stdin=text.encode()))[1].strip()
        # Moves HEAD's branch only if it is still `parent` (a person's commit meanwhile fails this one).
        subject = text.split("\n", 1)[0]
        await self._run("update-ref", "-m", f"commit: {subject}", "HEAD", sha, *(parent,) if parent else ())
        self._last_tree = (sha, tree)
        return sha

    async def _head(self) -> str | None:
        # From .git's files when they have it; git knows when they do not (say, refs packed by a gc).
        if (head := self._head_from_files()) is not None:
            return head
        code, out = await self._run("rev-parse", "--verify", "-q", "HEAD", ok=(0, 1))
        return out.strip() or None if code == 0 else None

    async def _tree_of(self, commit: str) -> str:
        if self._last_tree is None or self._last_tree[0] != commit:
            self._last_tree = (commit, (await self._run("rev-parse", f"{commit}^{{tree}}"))[1].strip())
        return self._last_tree[1]

    async def _housekeeping(self) -> None:
        # git's own threshold decides whether there is anything to do; the gc detaches and works on
        # in the background, so a write arriving now is not held up.
        try:
            await self._run("-c", f"gc.auto={_GC_AUTO}", "gc", "--auto", "--quiet")
        except GitError as exc:
            log.warning("git housekeeping failed (the vault is fine; it is tried again later): %s", exc)

    def _note_commit(self, sha: str | None, lines: list[str]) -> None:
        if sha is None:
            return
        self.status.last_commit = sha
        self.status.last_commit_at = time.time()


def _lay_out(stage: Path, contents: dict[str, bytes | None]) -> None:
    """Write each path's bytes under `stage` (none for a removed file); a failure leaves nothing behind."""
    try:
        stage.mkdir(parents=True, exist_ok=True)  # git needs the work tree, even with only removals in it
        for path, data in contents.items():
            if data is not None:
                copy = stage / path
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(data)
    except OSError:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@dataclass
class _Staging:
    """Paths for `git add` (few files, or folders), for `git update-index` (many files), and gone."""

    added: list[str]
    files: list[str]
    gone: list[str]


# Adds, updates or (for a path no longer on disk) removes each path read from stdin.
_UPDATE_INDEX = ("update-index", "--add", "--remove", "-z", "--stdin")
# The blob id of each `:path` (the index's entry) named on stdin, or "<name> missing".
_INDEX_BLOBS = ("cat-file", "-z", "--batch-check=%(objectname)")


def _nul(paths: list[str]) -> str:
    return "".join(f"{path}\0" for path in paths)


# The untracked files the vault's ignore rules cover, a folder wholly ignored as one `folder/` entry.
# (`check-ignore` would say it per path, but takes minutes for a hundred thousand tracked ones.)
_IGNORED = ("ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory")


def _not_ignored(paths: list[str], listing: str) -> list[str]:
    """`paths` without those `listing` (the output of _IGNORED) names, as `git add` would skip them."""
    ignored = set(listing.split("\0")) - {""}
    if not ignored:
        return paths
    return [path for path in paths if not _under(path, ignored)]


def _under(path: str, ignored: set[str]) -> bool:
    if path in ignored:
        return True
    parts = path.split("/")
    return any("/".join(parts[:n]) + "/" in ignored for n in range(1, len(parts)))


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


def message(lines: list[str], source: str, more: int = 0) -> str:
    """A commit message: what changed for whom (by short hash), a trailer, and the changes listed.

    At most MAX_LISTED changes are listed; the rest, and `more` changes without a line of their own,
    are counted ("... and K more").
    """
    # One line per change: a file name with a newline in it must not be able to fake a trailer.
    listed = [" ".join(line.split()) for line in lines[:MAX_LISTED]]
    total = len(lines) + more
    if total == 1:
        subject, body = listed[0], ""
    else:
        subject = f"{total} changes"
        rest = [f"- ... and {total - len(listed)} more"] if total > len(listed) else []
        body = "\n".join([*(f"- {line}" for line in listed), *rest]) + "\n\n"
    return f"{subject}\n\n{body}Source: {source}\n"
