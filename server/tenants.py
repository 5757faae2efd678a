"""The tenants of TENANTS_DIR (SPEC §12): their claims loaded, their vaults opened, kept in step with the folder.

Each subfolder holding a `tenant.md` is a tenant, named by the folder, and served by a `Service` of its
own (index, git writer, watcher's reconcile, cache). All tenants share the process's one worker and one
watcher (`server.tenantwatch`). A `tenant.md` added, edited or removed takes effect without a restart;
a broken one keeps its last good claims in service (none at start-up) and is reported, and a claim two
tenants make is refused for both (`routing.Directory`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
from pathlib import Path

import msgspec

from server import keyfile
from server.config import Settings
from server.gitrun import GitError
from server.hkdf import tenant_key
from server.hub import Hub, TenantSecrets
from server.recorder import Turns
from server.remote import without_credentials
from server.routing import TENANT_FILE, Directory, TenantClaims, TenantFileError, parse_tenant, valid_name
from server.service import Service, open_service, return_freed_memory
from server.sync import SyncError
from server.vault import signature
from server.worker import Worker

log = logging.getLogger("memory_bridge.tenants")

# A tenant's own webhook secrets, beside its key in `.git/` (never committed, unlike tenant.md).
# The per-vault caches of recent callers, in shares: a tenant's is this much smaller than a single vault's.
_CACHE_SHARES = 16
# Tenants opened at once at start-up: enough to keep git busy on one core while another is indexed.
_OPENING = 2
# Seconds between one tenant's batch of recorded calls and the next tenant's: a few batches a second
# for the whole process, however many tenants call.
_RECORDING_GAP = 0.25
SECRET_FILES = {"webhook": "memory-bridge/webhook-secret", "elevenlabs": "memory-bridge/elevenlabs-webhook-secret"}


def tenant_settings(settings: Settings, name: str, claims: TenantClaims) -> Settings:
    """One tenant's settings: its vault, its numbers, and its caller-key key.

    The key is the tenant's own when its `.git/` holds one (a vault moved in keeps its callers), else
    derived from PHONE_HASH_KEY and the tenant's name with HKDF, else one made for it on first start.
    """
    root = settings.tenants_dir / name if settings.tenants_dir is not None else settings.vault_dir
    own = keyfile.read_key(root, None)
    key = tenant_key(settings.phone_hash_key, name) if own is None and settings.phone_hash_key else None
    return msgspec.structs.replace(
        settings,
        vault_dir=root,
        phone_hash_key=key,
        agent_numbers=tuple(dict.fromkeys(settings.agent_numbers + claims.numbers)),
        # GIT_REMOTE is one vault's: a tenant syncs with the remote its tenant.md names, if any.
        git_remote=claims.git_remote,
        git_branch=claims.git_branch or settings.git_branch,
    )


def read_secrets(root: Path) -> TenantSecrets:
    """A tenant's own webhook secrets from its `.git/` folder; those not there are None."""
    found: dict[str, str | None] = {}
    for name, relpath in SECRET_FILES.items():
        try:
            found[name] = (root / ".git" / relpath).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            found[name] = None
    return TenantSecrets(**found)


class Unusable(msgspec.Struct, frozen=True):
    """A tenant.md that exists but cannot be used, and why (for `/health` and `doctor`)."""

    reason: str


def read_claims(settings: Settings, folder: Path) -> TenantClaims | Unusable | None:
    """A tenant folder's claims, why its tenant.md cannot be used, or None when it has none."""
    try:
        text = (folder / TENANT_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return Unusable(f"{TENANT_FILE} cannot be read: {type(exc).__name__}")
    try:
        return parse_tenant(text, settings.default_region)
    except TenantFileError as exc:
        return Unusable(f"{TENANT_FILE} {exc}")


class Tenants:
    """Opens, starts, reloads and stops the tenants of one TENANTS_DIR, keeping a `Hub` up to date."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        assert settings.tenants_dir is not None
        self.settings = settings
        self.root = settings.tenants_dir
        self.hub = hub
        self.claims: dict[str, TenantClaims] = {}
        self._seen: dict[str, int | None] = {}  # tenant.md's stat signature when last read
        self._errors: dict[str, str] = {}
        self.worker: Worker | None = None
        self.turns = Turns(_RECORDING_GAP)
        self._lock = asyncio.Lock()

    def folders(self) -> list[str]:
        """The subfolders of TENANTS_DIR that may be tenants, by name."""
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def _stat(self, name: str) -> int | None:
        try:
            return signature((self.root / name / TENANT_FILE).stat())
        except OSError:
            return None

    def _read(self, name: str) -> TenantClaims | None:
        """Read a folder's tenant.md: its claims, or the last good ones when it is broken (an error noted)."""
        self._seen[name] = self._stat(name)
        self._errors.pop(name, None)
        if not valid_name(name):
            if (self.root / name / TENANT_FILE).exists():
                self._errors[name] = "the folder's name is not a tenant name (use a-z, 0-9, - and _)"
            return None
        found = read_claims(self.settings, self.root / name)
        if isinstance(found, Unusable):
            self._errors[name] = found.reason
            kept = "its last good claims stay" if name in self.claims else "not served"
            log.warning("tenant %s: %s; %s", name, found.reason, kept)
            return self.claims.get(name)
        return found

    def _publish(self) -> None:
        """Rebuild the routing from the claims of the tenants in service, and the problems to report."""
        self.hub.directory = Directory(self.claims, self.settings.default_region)
        problems = {name: [error] for name, error in self._errors.items()}
        for name, conflicts in self.hub.directory.conflicts.items():
            problems.setdefault(name, []).extend(conflicts)
            for conflict in conflicts:
                log.warning("tenant %s: %s; neither tenant gets those calls", name, conflict)
        self.hub.problems = problems

    def open_all(self) -> None:
        """Open every tenant's vault and index it (start-up); broken ones are reported, not served.

        A few at a time: while one tenant's git commands run (most of a small vault's opening), another
        is indexed. The garbage collector waits meanwhile, as it would walk the growing index again
        and again for nothing: everything loaded here lives as long as the process.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        found = [(name, claims) for name in self.folders() if (claims := self._read(name)) is not None]
        collecting = gc.isenabled()
        gc.disable()
        try:
            with concurrent.futures.ThreadPoolExecutor(_OPENING, thread_name_prefix="open-tenant") as pool:
                list(pool.map(lambda item: self._open_or_report(*item), found))
        finally:
            if collecting:
                gc.enable()
            gc.freeze()
            return_freed_memory()  # once for all: each trim walks the whole heap
        self._publish()
        log.info("serving %d tenant(s) from %s", len(self.hub.services), self.root)

    def _open_or_report(self, name: str, claims: TenantClaims) -> Service | None:
        """Open a tenant; one that cannot be opened (its remote refuses, say) is reported, never served."""
        try:
            return self._open(name, claims)
        except (SyncError, GitError, OSError) as exc:
            self._errors[name] = f"cannot be opened: {' '.join(without_credentials(str(exc)).split())}"
            log.error("tenant %s %s", name, self._errors[name])
            return None

    def _open(self, name: str, claims: TenantClaims) -> Service:
        service = open_service(tenant_settings(self.settings, name, claims), return_memory=False)
        service.memory.identities.share_caches(_CACHE_SHARES)
        self.claims[name] = claims
        self.hub.services[name] = service
        self.hub.secrets[name] = read_secrets(service.memory.vault.root)
        return service

    async def start(self) -> None:
        """Start the shared worker and every tenant's writer, recorder (taking turns) and reconcile scan."""
        self.worker = Worker()
        await self.worker.start()
        for service in list(self.hub.services.values()):
            await service.start(worker=self.worker, own_watch=False, turns=self.turns)

    async def refresh(self, name: str) -> None:
        """Bring one tenant folder up to date: a tenant.md added, edited or removed (or unchanged)."""
        async with self._lock:
            if self._stat(name) == self._seen.get(name, -1) and (name in self.hub.services) == (name in self.claims):
                return
            had = name in self.hub.services
            if (self.root / name).is_dir():
                claims = self._read(name)
            else:  # the folder is gone
                claims = None
                self._errors.pop(name, None)
                self._seen.pop(name, None)
            if claims is None and had:
                service = self.hub.services.pop(name)
                self.claims.pop(name, None)
                self.hub.secrets.pop(name, None)
                self._publish()
                await service.stop()
                log.info("tenant %s removed: no longer served", name)
                return
            if claims is not None and not had:
                opened = await asyncio.to_thread(self._open_or_report, name, claims)
                if opened is not None:
                    await opened.start(worker=self.worker, own_watch=False, turns=self.turns)
                    log.info("tenant %s added", name)
            elif claims is not None:
                self.claims[name] = claims
                self.hub.secrets[name] = read_secrets(self.root / name)
                identities = self.hub.services[name].memory.identities
                identities.set_configured(self.settings.agent_numbers + claims.numbers)
            if had and claims is not None:
                # The edit is the tenant's history too: committed as a hand edit after its quiet period.
                self.hub.services[name].watcher.adopt([TENANT_FILE])
            self._publish()

    async def refresh_all(self) -> None:
        """Look at every folder again (the periodic scan behind the watcher, and removed folders)."""
        for name in sorted(set(self.folders()) | set(self.hub.services) | set(self._errors)):
            await self.refresh(name)

    async def stop(self) -> None:
        """Stop every tenant, then the shared worker."""
        for service in list(self.hub.services.values()):
            await service.stop()
        if self.worker is not None:
            await self.worker.stop()
