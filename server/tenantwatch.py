"""One watcher for every tenant (SPEC §12): TENANTS_DIR's events, dispatched by path to the tenant they concern.

A hundred tenants must not cost a hundred watchers (each a thread and a set of inotify watches). One
recursive watch covers every tenant's content folders and one flat watch covers TENANTS_DIR and each
tenant's root (soul.md, tenant.md); events go to the tenant's own `Watcher.handle`, and a tenant.md
or a folder that comes or goes makes `Tenants` look again. When the set of folders changes the
watches are started again over the new set; a periodic scan catches anything an event missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

from litestar import Litestar

from server.config import Settings
from server.hub import Hub
from server.routing import TENANT_FILE
from server.tenants import Tenants
from server.watcher import watch_changes

log = logging.getLogger("memory_bridge.watcher")


class TenantsWatcher:
    """Watches TENANTS_DIR once and hands each event to the tenant it concerns."""

    def __init__(self, tenants: Tenants, scan_seconds: float) -> None:
        self.tenants = tenants
        self.root = tenants.root.resolve()
        self.scan_seconds = scan_seconds
        self.heartbeat: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._scan: asyncio.Task[None] | None = None
        self._restart = asyncio.Event()
        self._stop = asyncio.Event()
        self._watching: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    async def start(self) -> None:
        """Start watching and the periodic scan of the tenants' folders."""
        self._task = asyncio.create_task(self._run(), name="tenants-watcher")
        self._scan = asyncio.create_task(self._scan_loop(), name="tenants-scan")
        self.heartbeat = time.time()

    async def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._restart.set()
        for task in (self._task, self._scan):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._task, self._scan) if t is not None), return_exceptions=True)

    @property
    def alive(self) -> bool:
        """Whether the watch task runs."""
        return self._task is not None and not self._task.done()

    def _paths(self) -> tuple[list[Path], list[Path]]:
        recursive: list[Path] = []
        flat: list[Path] = [self.root] + [self.root / name for name in self.tenants.folders()]
        for service in self.tenants.hub.services.values():
            deep, _ = service.watcher.watched()
            for path in deep:
                path.mkdir(parents=True, exist_ok=True)
            recursive += deep
        return recursive, flat

    async def _run(self) -> None:
        while not self._stop.is_set():
            self._restart.clear()
            try:
                self._watching = self._folders()
                recursive, flat = self._paths()
                watches = [self._watch(flat, False)] + ([self._watch(recursive, True)] if recursive else [])
                await asyncio.gather(*watches)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad batch
                log.exception("the tenants' watcher failed; restarting it")
                await asyncio.sleep(0.5)

    async def _watch(self, paths: list[Path], recursive: bool) -> None:
        async for changes in watch_changes(paths, recursive, self._restart):
            self.heartbeat = time.time()
            await self.dispatch({path for _, path in changes})

    async def dispatch(self, paths: set[str]) -> None:
        """Send changed absolute paths to their tenants; a tenant.md or tenant folder changed: reload it."""
        by_tenant: dict[str, list[str]] = defaultdict(list)
        reload: set[str] = set()
        for path in paths:
            try:
                parts = Path(path).relative_to(self.root).parts
            except ValueError:
                continue
            if not parts or parts[0].startswith("."):
                continue
            if len(parts) == 1 or (len(parts) == 2 and parts[1] == TENANT_FILE):
                reload.add(parts[0])
            if len(parts) > 1:
                by_tenant[parts[0]].append(path)
        for name in sorted(reload):
            await self.tenants.refresh(name)
        for name, changed in by_tenant.items():
            service = self.tenants.hub.services.get(name)
            if service is not None:
                await service.watcher.handle(changed)
                service.watcher.heartbeat = self.heartbeat
        if reload:
            # Only a change at the top (a folder or a tenant.md) can change what is watched; looking
            # at every folder after every batch of a tenant's own writes would cost a stat per tenant.
            self._watch_again_if_changed()

    def _folders(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(self.tenants.folders()), tuple(sorted(self.tenants.hub.services))

    def _watch_again_if_changed(self) -> None:
        if self._folders() != self._watching:
            self._restart.set()  # a folder or tenant came or went: watch the new set

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scan_seconds)
            try:
                await self.tenants.refresh_all()
                self.heartbeat = time.time()
                self._watch_again_if_changed()
            except Exception:
                log.exception("the scan of the tenants' folders failed")


@contextlib.asynccontextmanager
async def serve_tenants(app: Litestar, settings: Settings) -> AsyncIterator[None]:
    """The app's lifespan with TENANTS_DIR: every tenant opened and started, one watcher over them all."""
    started = time.monotonic()
    hub = Hub(settings)
    tenants = Tenants(settings, hub)
    tenants.open_all()
    await tenants.start()
    watcher = TenantsWatcher(tenants, settings.reconcile_seconds)
    await watcher.start()
    app.state.hub = hub
    app.state.tenants_watcher = watcher
    log.info(
        "memory-bridge ready in %.2f s on %s:%d, %d tenant(s)",
        time.monotonic() - started,
        settings.host,
        settings.port,
        len(hub.services),
    )
    try:
        yield
    finally:
        await watcher.stop()
        await tenants.stop()
