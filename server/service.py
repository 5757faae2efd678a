"""Start-up and shutdown: from settings to a running vault, git writer, index and watcher.

The server and the CLI open the vault the same way, so a CLI write takes exactly the server's path.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import sys
import time
from dataclasses import dataclass, field

from server import cache, filemodes, gitmerge, gitstate, importer, keyfile, mergedriver, obsidian
from server.addbyphone import Keyed
from server.backfill import BackfillSchedule
from server.config import Settings
from server.conversations import ConversationsApi
from server.eraser import Eraser
from server.gitlock import ServerMark, server_running
from server.gitrun import GitError
from server.gitwriter import GitWriter
from server.identity import Identities
from server.inbox import Inbox
from server.index import Index
from server.memory import Memory, phone_keyer
from server.postcalls import Postcalls
from server.recorder import Turns
from server.retainer import Retainer
from server.sync import Sync, join_remote
from server.vault import Vault
from server.watcher import Watcher
from server.worker import Worker

log = logging.getLogger("memory_bridge")


@dataclass
class Service:
    """Everything one vault needs, wired together."""

    settings: Settings
    memory: Memory
    watcher: Watcher
    sync: Sync
    eraser: Eraser
    postcalls: Postcalls
    started_at: float
    ready_seconds: float = 0.0
    worker: Worker | None = None
    mark: ServerMark | None = None
    owns_worker: bool = True  # False for a tenant: the process's one worker outlives it
    backfill: BackfillSchedule | None = None
    # Files changed while no server ran, left uncommitted at start-up (a person's git operation was
    # in progress): the watcher commits them once it has ended.
    deferred: list[str] = field(default_factory=list)
    # Drops call lines older than RETAIN_CALLS_DAYS (the server only).
    retainer: Retainer | None = None

    async def start(
        self, watch: bool = True, worker: Worker | None = None, own_watch: bool = True, turns: Turns | None = None
    ) -> None:
        """Start the git writer and, for the server, the worker process and the watcher.

        Tenants (SPEC §12) share one `worker` process, one watcher of their folders (`own_watch`
        False) and the recorders' `turns`: a process serving a hundred vaults starts neither a
        hundred times, and records calls for one vault at a time.
        """
        if watch:
            # The server's calls come first: its git commands and call recording run in a worker,
            # and a write's file work in a thread that must hand the interpreter back to the event
            # loop within half a millisecond (the default is 5 ms).
            sys.setswitchinterval(0.0005)
        if watch and worker is not None:
            self.mark = ServerMark(self.memory.vault.root)
            self.mark.claim()
            self.worker, self.owns_worker = worker, False
        elif watch:
            # A CLI run beside the server leaves the server's uncommitted files to it.
            self.mark = ServerMark(self.memory.vault.root)
            self.mark.claim()
            self.worker = Worker()
            await self.worker.start()
        await self.memory.git.start(self.worker)
        await self.memory.recorder.start(self.worker, turns)
        if watch:
            await self.watcher.start(own_watch)
            self.watcher.adopt(self.deferred)
            await self.sync.start()
            if self.settings.retain_calls_days is not None:
                self.retainer = Retainer(self.memory, self.settings.retain_calls_days)
                self.retainer.start()
            await self.postcalls.start()  # after the watcher: a parked event waits for it to see the fix
            key, minutes = self.settings.elevenlabs_api_key, self.settings.backfill_minutes
            if key and minutes:
                api = ConversationsApi(self.settings.elevenlabs_api_url, key)
                self.backfill = BackfillSchedule(self.memory, api, self.postcalls, minutes)
                self.backfill.start()
        self.ready_seconds = time.monotonic() - self.started_at

    async def stop(self) -> None:
        """Stop watching, commit what is pending, stop the git writer, save the index cache."""
        # Nothing waits any longer for a person's git operation: what cannot be committed now stays on
        # disk, for the next start.
        self.memory.git.operations.stop_waiting()
        if self.retainer is not None:
            await self.retainer.stop()
        if self.backfill is not None:
            await self.backfill.stop()
        await self.postcalls.stop()  # what is left stays held for the next start
        await self.watcher.stop()
        await self.memory.recorder.stop()
        await self.memory.git.stop()
        await self.sync.stop()  # after the last commits, which it pushes
        if self.worker is not None and self.owns_worker:
            await self.worker.stop()
        cache.save(self.memory.vault.root, self.watcher.snapshot())
        if self.mark is not None:
            self.mark.release()


class VaultMissing(Exception):
    """There is no vault (or no key) to read; the message says what to do."""


@dataclass
class VaultView:
    """An existing vault, indexed for reading: what `show`, `preview` and `hash` need, nothing more."""

    settings: Settings
    index: Index
    identities: Identities


def read_key(settings: Settings) -> bytes:
    """The caller-key key (configured, or the vault's own); VaultMissing if there is none. Creates nothing."""
    key = keyfile.read_key(settings.vault_dir, settings.phone_hash_key)
    if key is None:
        raise VaultMissing(
            f"no PHONE_HASH_KEY is set and {settings.vault_dir} holds no key of its own: set PHONE_HASH_KEY, "
            "or point VAULT_DIR (or --vault) at the vault"
        )
    return key


def open_view(settings: Settings) -> VaultView:
    """Index an existing vault for reading, from its files and derived cache: creates, writes and commits nothing."""
    root = settings.vault_dir
    if not (root / ".git").is_dir():
        raise VaultMissing(f"no vault at {root}: point VAULT_DIR (or --vault) at one, or run `memory-bridge serve`")
    vault = Vault(root)
    index = Index()
    cached = cache.load(vault.root) or {}
    for relpath, stat in vault.scan().items():
        loaded = cache.current(cached, relpath, stat) or vault.load(relpath)
        if loaded is not None:
            index.apply(relpath, loaded, vault.next_seq())
    return VaultView(settings, index, Identities(settings, index, read_key(settings)))


def return_freed_memory() -> None:
    """Hand the memory that indexing used and freed (parsing, the cache's bytes) back to the system.

    glibc keeps freed memory for the process's next allocations; after indexing 100,000 callers that
    is about a third of the resident memory, and a running server never needs it again. Elsewhere
    (musl, macOS) there is no `malloc_trim`, and nothing to do.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _register_merge_driver(git: GitWriter) -> tuple[str, ...]:
    """Register the vault's merge driver (SPEC §11) at every start; the lines it added to `.gitattributes`."""
    # This interpreter runs it, so git needs no `memory-bridge` on its PATH.
    try:
        return mergedriver.install(git.runner, mergedriver.service_command(sys.executable)).attribute_lines
    except (GitError, OSError) as exc:
        # Calls and writes do not need it; merges without it stop at conflicts instead.
        log.warning("could not register the vault's merge driver: %s", " ".join(str(exc).split()))
        return ()


def _keyed(settings: Settings, vault: Vault, key: bytes, dirty: list[str]) -> list[str]:
    """The files of `dirty` that may be committed, a person's caller `phone:` keyed first (SPEC §14)."""
    keyer = phone_keyer(vault, Identities(settings, Index(), key), settings.store_phone_numbers)
    done = keyer.key_files(dirty)
    return [relpath for relpath in dirty if done[relpath] is not Keyed.REFUSED]


def open_service(settings: Settings, return_memory: bool = True) -> Service:
    """Open (creating on first use) the vault of `settings` and index it. Does not start tasks.

    `return_memory` False: the caller opens many vaults and calls `return_freed_memory` once after them.
    """
    started = time.monotonic()
    vault = Vault(settings.vault_dir)
    vault.root.mkdir(parents=True, exist_ok=True)
    git = GitWriter(vault.root, settings.git_author_name, settings.git_author_email, vault.conflicted)
    created_repo = git.ensure_repo(settings.git_branch)
    tightened = filemodes.tighten_once(vault.root)
    if tightened.total:
        log.warning(
            "made %d file(s) and %d folder(s) of the vault readable by its owner only (0600/0700); "
            "new ones are created so",
            tightened.files,
            tightened.folders,
        )
    if not server_running(vault.root):
        # What a killed server may leave: git's index lock, its own merge half done. With a server
        # running (this is the CLI), both may be that server's work in progress: left alone.
        git.runner.settle_lock()
        gitmerge.recover_interrupted(git.runner)
    if settings.git_remote is not None:
        join_remote(settings, git, created_repo)
    vault.ensure_layout()
    stale = vault.remove_stale_temp_files()
    if stale:
        log.warning("removed %d temporary file(s) left by an interrupted write", stale)
    key, generated = keyfile.phone_hash_key(vault.root, settings.phone_hash_key)
    if generated:
        log.warning(
            "PHONE_HASH_KEY is not set: using a key kept in the vault's .git folder (never committed). "
            "Set PHONE_HASH_KEY and keep a copy: without the key, callers cannot be recognised."
        )
    if keyfile.check_and_record(vault.root, key) is keyfile.KeyCheck.DIFFERS:
        log.error("%s", keyfile.mismatch_advice(vault.root))
    attributes = _register_merge_driver(git)
    if created_repo or not git.has_commit():
        obsidian.add_missing(vault)  # Obsidian's daily-note settings and the callers view, in the first commit
        git.commit_sync(["."], ["create the vault"], "cli")  # and whatever the folder already held
        log.info("created a new vault at %s", vault.root)
    elif attributes and not server_running(vault.root):
        git.commit_sync([".gitattributes"], ["merge driver: .gitattributes names caller files, notes and souls"], "cli")
    # Files changed while no server ran; with a server running (this is the CLI), they are its to commit.
    dirty = [] if server_running(vault.root) else git.dirty_paths()
    # Never committed: a file with conflict markers (a person resolves it; it is listed on /health) ...
    dirty = [path for path in dirty if not vault.conflicted(path)]
    operation = gitstate.in_progress(vault.root)
    deferred = dirty if operation is not None else []  # ... nor anything during a person's merge or rebase
    if operation is not None:
        log.warning("a git %s is in progress in the vault: nothing is committed until it ends", operation.value)
    elif dirty and importer.interrupted(vault.root):
        # Not a person's edits: `import-seed`, run again, commits them as the import's (Source: cli).
        log.warning("an import-seed was interrupted: run it again to finish it; its files wait uncommitted")
    elif dirty := _keyed(settings, vault, key, dirty):
        # Edits made while the service was not running (or a write interrupted before its commit).
        line = f"hand edits made while memory-bridge was stopped ({len(dirty)} file(s))"
        git.commit_sync(dirty, [line], "hand-edit")
    index = Index()
    memory = Memory(settings, vault, index, git, key)
    watcher = Watcher(vault, index, memory.writes, settings.hand_edit_quiet_seconds, settings.reconcile_seconds)
    parsed = watcher.load_all(cache.load(vault.root))
    # The index lives as long as the process: keep it out of the garbage collector's full
    # collections, which would otherwise walk it every so often and pause calls for milliseconds.
    gc.freeze()
    if parsed:
        cache.save(vault.root, watcher.snapshot())
    if return_memory:
        return_freed_memory()
    log.info(
        "indexed %d file(s) (%d parsed, the rest from the cache): %d caller(s), %d with errors",
        len(index.files),
        parsed,
        index.caller_count,
        len(index.errors()),
    )
    sync = Sync(settings, git, memory.writes.gate)
    sync.before_merge = memory.writes.key_dirty_callers
    eraser = Eraser(memory, sync)
    sync.follow, sync.after_forced_push = eraser.follow, eraser.pushed
    postcalls = Postcalls(memory, Inbox(vault.root))
    return Service(settings, memory, watcher, sync, eraser, postcalls, started, deferred=deferred)
