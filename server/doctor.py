"""`memory-bridge doctor`: read-only checks of config, vault, git and secrets, each with what to do.

Nothing here writes: a vault that does not exist yet is reported, not created.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

from server import doctor_tenants, gitstate, keyfile
from server.compose import BUILTINS
from server.config import Settings
from server.findings import Finding, Level
from server.gitwriter import GitWriter
from server.inbox import Inbox
from server.index import Index
from server.keyfile import KEY_FILE
from server.markdown import SOUL
from server.placeholders import unfilled_in
from server.remote import without_credentials
from server.sync import REMOTE
from server.vault import Vault
from server.watcher import Watcher


def diagnose(settings: Settings) -> Iterator[Finding]:
    """Every check, in the order a person would fix things."""
    yield Finding(Level.OK, f"settings read: vault {settings.vault_dir}, listening on {settings.host}:{settings.port}")
    yield from _secrets(settings)
    yield from doctor_tenants.tenants(settings)
    if settings.tenants_dir is not None and settings.vault_dir.parent != settings.tenants_dir:
        return  # every tenant checked above; `--tenant NAME` checks one tenant's vault too
    if shutil.which("git") is None:
        yield Finding(Level.FIX, "git is not installed: install git (the vault's history is a git repository)")
        return
    version = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    yield Finding(Level.OK, version)
    vault = Vault(settings.vault_dir)
    if not vault.root.exists():
        yield Finding(Level.WARN, f"{vault.root} does not exist yet: `memory-bridge serve` creates it on first start")
        return
    if not (vault.root / ".git").is_dir():
        yield Finding(
            Level.FIX, f"{vault.root} is not a git repository: run `git init` in it, or point VAULT_DIR elsewhere"
        )
        return
    yield from _git(vault, settings)
    yield from _key(vault, settings)
    yield from _sync(vault, settings)
    yield from _files(vault)
    yield from doctor_tenants.own_numbers(vault.root, settings)


def _secrets(settings: Settings) -> Iterator[Finding]:
    if settings.webhook_secret:
        yield Finding(Level.OK, "WEBHOOK_SECRET is set (personalize webhook and remember tool)")
    else:
        yield Finding(
            Level.WARN,
            (
                "WEBHOOK_SECRET is not set: the personalize webhook is open (loopback only) and the remember tool "
                "is disabled; set it and add it as a header secret in ElevenLabs"
            ),
        )
    if settings.elevenlabs_webhook_secret:
        yield Finding(Level.OK, "ELEVENLABS_WEBHOOK_SECRET is set (post-call webhooks)")
    else:
        yield Finding(Level.WARN, "ELEVENLABS_WEBHOOK_SECRET is not set: post-call webhooks are refused (403)")
    if settings.elevenlabs_api_key:
        yield Finding(
            Level.OK,
            "ELEVENLABS_API_KEY is set (memory-bridge backfill"
            + (f", every {settings.backfill_minutes:g} minute(s))" if settings.backfill_minutes else ")"),
        )
    elif settings.backfill_minutes:
        yield Finding(
            Level.FIX, "BACKFILL_MINUTES is set but ELEVENLABS_API_KEY is not: set it, or nothing is backfilled"
        )
    if settings.admin_api_key:
        yield Finding(Level.OK, "ADMIN_API_KEY is set (REST API)")
    else:
        yield Finding(Level.WARN, "ADMIN_API_KEY is not set: the /api routes are disabled (403)")
    if not settings.phone_hash_key:
        yield Finding(
            Level.WARN,
            (
                "PHONE_HASH_KEY is not set: a local key in the vault's .git folder is used; set PHONE_HASH_KEY "
                "and back it up, or callers cannot be recognised after a move"
            ),
        )
    else:
        yield Finding(Level.OK, "PHONE_HASH_KEY is set")


def _git(vault: Vault, settings: Settings) -> Iterator[Finding]:
    git = GitWriter(vault.root, settings.git_author_name, settings.git_author_email)
    head = git.head()
    if head is None:
        yield Finding(Level.WARN, "the vault has no commits yet: `memory-bridge serve` makes the first one")
    else:
        yield Finding(Level.OK, f"vault history at {head[:12]}")
    if (busy := gitstate.state(vault.root)) is not None:
        yield Finding(Level.FIX, f"{busy.describe()}; until then the service commits nothing and holds its writes")
    if (vault.root / ".git" / "index.lock").exists():
        yield Finding(
            Level.FIX, "a .git/index.lock exists: if no git is running in the vault, the service removes it at start"
        )
    dirty = git.dirty_paths()
    if dirty:
        yield Finding(
            Level.WARN, f"{len(dirty)} uncommitted change(s) in the vault: they are committed at the next start"
        )
    tracked = git.runner.run_sync("ls-files", check=False).stdout.splitlines()
    if any(path.endswith(KEY_FILE.split("/")[-1]) for path in tracked):
        yield Finding(
            Level.FIX, "a phone-hash key file is tracked in the vault's git: remove it from history and rotate the key"
        )


def _key(vault: Vault, settings: Settings) -> Iterator[Finding]:
    key = keyfile.read_key(vault.root, settings.phone_hash_key)
    expected = keyfile.expected_fingerprint(vault.root)
    if key is None or expected is None:
        return
    if keyfile.fingerprint(key) != expected:
        yield Finding(Level.FIX, keyfile.mismatch_advice(vault.root))
    else:
        yield Finding(Level.OK, "the phone-hash key is the one the vault's callers were keyed with")


def _files(vault: Vault) -> Iterator[Finding]:
    index = Index()
    # The watcher's loader is the one the server uses; nothing is started, nothing is written.
    Watcher(vault, index, None, 0, 0).load_all()  # type: ignore[arg-type]
    if SOUL not in index.files:
        yield Finding(Level.WARN, "soul.md is missing: the agent gets a plain fallback prompt")
    for unfilled in unfilled_in(index.soul, BUILTINS):
        yield Finding(
            Level.FIX,
            f"soul.md's {unfilled.where} uses {{{{{unfilled.name}}}}}, which no variable fills: declare "
            f"{unfilled.name} in soul.md's frontmatter (it is sent as plain text until then)",
        )
    yield Finding(Level.OK, f"{index.caller_count} caller(s) indexed")
    held = Inbox(vault.root).load()
    if held:
        yield Finding(
            Level.WARN,
            f"{len(held)} post-call event(s) held in the inbox, not yet written: a running server writes them "
            "(a broken caller file holds its events until it is fixed); `memory-bridge inbox` lists them",
        )
    for path, error in index.errors().items():
        yield Finding(Level.FIX, f"{path} {error}")


# What git says when the remote refused the credentials (or asked for some it could not get).
_AUTH_WORDS = ("authentication failed", "could not read username", "permission denied", "403", "401")


def _sync(vault: Vault, settings: Settings) -> Iterator[Finding]:
    url = settings.git_remote
    if url is None:
        yield Finding(
            Level.OK,
            "GIT_REMOTE is not set: the vault is not synced (set it to share the vault with laptops or a replica)",
        )
        return
    shown, branch = without_credentials(url), settings.git_branch
    runner = GitWriter(vault.root, settings.git_author_name, settings.git_author_email).runner
    configured = runner.run_sync("config", "--get", f"remote.{REMOTE}.url", check=False).stdout.strip()
    if configured != url:
        yield Finding(
            Level.WARN, f"the vault does not point at GIT_REMOTE yet ({shown}): the service sets it at its next start"
        )
    target = REMOTE if configured == url else url
    listed = runner.run_sync("ls-remote", "--heads", target, f"refs/heads/{branch}", check=False, timeout=20)
    if listed.returncode != 0:
        problem = without_credentials(" ".join(listed.stderr.split()))[:300]
        if any(word in problem.lower() for word in _AUTH_WORDS):
            yield Finding(Level.FIX, f"the remote {shown} refused the credentials: {problem}")
        else:
            yield Finding(Level.FIX, f"cannot reach the remote {shown}: {problem}")
        return
    tip = listed.stdout.split()[0] if listed.stdout.strip() else None
    if tip is None:
        yield Finding(
            Level.OK, f"the remote {shown} answers; it has no branch {branch} yet (the service's first push makes it)"
        )
        return
    yield Finding(Level.OK, f"the remote {shown} answers; its {branch} is at {tip[:12]}")
    counted = runner.run_sync(
        "rev-list", "--left-right", "--count", f"HEAD...refs/remotes/{REMOTE}/{branch}", check=False
    )
    if counted.returncode == 0:
        ahead, behind = (int(n) for n in counted.stdout.split())
        if ahead or behind:
            yield Finding(
                Level.WARN, f"as of the last fetch: {ahead} commit(s) not pushed yet, {behind} not merged yet"
            )
        else:
            yield Finding(Level.OK, "as of the last fetch, the vault and the remote are in step")
