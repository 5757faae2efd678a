"""The sync figures of SPEC §10 (§11): two replicas of the benchmark vault meeting at a git remote on loopback.

The remote is a bare repository served by `git daemon --enable=receive-pack` on a loopback port,
started and stopped here. Replica A runs on a copy of the small benchmark vault and seeds the
empty remote; replica B starts on an empty folder and is cloned from it. Both are the real service
(`servers.start_service`), each with its own folder and port. B and the git daemon stand in for
other machines: they run in the kernel's idle class at niceness 19 (`servers.other_machine`).

- `sync-visibility`: a fact with a unique token written through A's API, then B's preview API
  (exactly the personalize answer, recording nothing) polled every 2 ms until it carries the
  token; p50/p95 over `sync_writes` writes. (a) With push events: the remote's `post-receive`
  hook (`benchmarks/githook.py`) plays the git host and POSTs a push event with `X-Gitlab-Token`
  to both replicas, which otherwise fetch only every 600 s. (b) Without: `SYNC_SECONDS=1`.
- `sync-busy`: personalize at the fixed rate on A with `SYNC_SECONDS=1` while B takes API writes
  (`sync_writes_per_s`) and pushes them, so A fetches and merges new commits every second. The
  same run with A started without `GIT_REMOTE` (every other setting the same, B still pushing)
  alternates with it (A/B/B/A), and the ratio of the p99s is reported.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from benchmarks import fixedrate, generate, servers
from benchmarks.httpclient import Connection, HttpError
from benchmarks.report import server_side

if TYPE_CHECKING:
    from benchmarks.run import Bench

SECRET = "bench-sync-webhook-secret"
# Replicas that should fetch only on push events still fetch this often.
NO_POLLING_SECONDS = "600"
POLL_SECONDS = 1.0
HOOK = Path(__file__).resolve().parent / "githook.py"
_SEEN_TIMEOUT_SECONDS = 15.0
# A write's way to the other replica, timed from its send (wall clock for the remote's and B's steps).
STEPS = ("ack_ms", "on_remote_ms", "fetched_by_b_ms", "merged_on_b_ms")


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return env | {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


@dataclass
class Remote:
    """A bare repository served by `git daemon` on a loopback port, pushes allowed, with a git host's hook."""

    home: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bare(self) -> Path:
        return self.home / "vault.git"

    @property
    def url(self) -> str:
        return f"git://{servers.HOST}:{self.port}/vault.git"

    def create(self) -> None:
        """An empty bare repository whose `post-receive` hook notes each push and delivers its event."""
        self.home.mkdir(parents=True)
        generate.git(self.home, "init", "-q", "--bare", "-b", "main", self.bare.name)
        hook = self.bare / "hooks" / "post-receive"
        settings, pushes = self.home / "hook.json", self.home / "pushes.log"
        hook.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I "{HOOK}" "{settings}" "{pushes}"\n')
        hook.chmod(0o755)
        self.push_events([])

    def push_events(self, urls: list[str]) -> None:
        """Send push events to these URLs from the next push on (none: the replicas only poll)."""
        (self.home / "hook.json").write_text(json.dumps({"urls": urls, "token": SECRET}))

    def pushes(self) -> list[tuple[float, str]]:
        """Every push the remote accepted so far: (wall-clock time it arrived, new commit)."""
        path = self.home / "pushes.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(float(line.split()[0]), line.split()[1]) for line in lines]

    def start(self) -> None:
        """Serve the repository (`git daemon`), and wait until it accepts connections."""
        self.port = servers.free_port()
        # The git host is another machine in service: here it takes only the CPU the replicas leave.
        args = [*servers.other_machine(), "git", "daemon", "--reuseaddr", "--export-all"]
        args += ["--enable=receive-pack"]
        args += [f"--base-path={self.home}", f"--listen={servers.HOST}", f"--port={self.port}", str(self.home)]
        self.proc = subprocess.Popen(args, env=_git_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex((servers.HOST, self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("git daemon did not start")

    def stop(self) -> None:
        """Stop `git daemon`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def tip(self) -> str | None:
        """The commit the remote's `main` points at (None while it has none)."""
        try:
            return generate.git(self.bare, "rev-parse", "-q", "--verify", "main").strip() or None
        except RuntimeError:
            return None

    def commits(self) -> int:
        """How many commits `main` holds."""
        return int(generate.git(self.bare, "rev-list", "--count", "main"))


@dataclass
class Replicas:
    """A remote and two replicas syncing with it: A seeded it with a copy of the small vault, B was cloned."""

    bench: Bench
    name: str
    remote: Remote = field(init=False)
    running: dict[str, servers.Server] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = self.bench.scratch / f"sync-{self.name}"
        self.remote = Remote(self.home / "remote")

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def set_up(self, settings: dict[str, str]) -> None:
        """The remote, A on a copy of the small vault (its first push seeds the remote), then B cloned from it."""
        from benchmarks import run  # run.py imports this module to register its scenarios

        source, _ = self.bench.vault(self.bench.config.small)
        if self.home.exists():
            shutil.rmtree(self.home)
        self.remote.create()
        self.remote.start()
        run.log(
            f"sync: remote at {self.remote.url}; replica A on a copy of the {self.bench.config.small:,}-caller vault"
        )
        generate.working_copy(source, self.home / "a")
        self.start("a", settings)
        deadline = time.monotonic() + 300
        while self.remote.tip() != generate.git(self.home / "a", "rev-parse", "HEAD").strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica A did not seed the remote:\n{self.running['a'].logs()[-2000:]}")
            time.sleep(0.1)
        run.log("sync: replica B, cloned from the remote")
        self.start("b", settings)

    def start(self, name: str, settings: dict[str, str], sync: bool = True) -> servers.Server:
        """(Re)start replica `name` with `settings`: with `GIT_REMOTE` if `sync`, the same other settings either way."""
        from benchmarks import run

        self.stop(name)
        env = {"SYNC_WEBHOOK_SECRET": SECRET, **settings} | ({"GIT_REMOTE": self.remote.url} if sync else {})
        label = "-".join(f"{k.lower()}{v}" for k, v in settings.items()) + ("" if sync else "-nosync")
        log_path = self.bench.logs / f"sync-{self.name}-{name}-{label}.log"
        # B, like the git host, stands in for another machine: A is the replica under measurement,
        # and what B does costs A only the CPU A leaves idle.
        prefix = tuple(servers.other_machine()) if name == "b" else ()
        server = servers.start_service(self.home / name, log_path, run.ROOT, 300, prefix, **env)
        server.name = f"replica {name.upper()}"
        run.log(f"  replica {name.upper()} ({label}) ready after {server.ready_after:.2f} s on port {server.port}")
        self.running[name] = server
        return server

    def stop(self, name: str) -> None:
        """Stop replica `name` if it runs (gracefully: what it committed is pushed)."""
        server = self.running.pop(name, None)
        if server is not None:
            server.stop()

    def close(self) -> None:
        """Stop both replicas and the remote; the folders go to the vault cache's trash unless --keep."""
        for name in list(self.running):
            self.stop(name)
        self.remote.stop()
        if not self.bench.keep and self.home.exists():
            trash = self.bench.cache / ".trash"
            trash.mkdir(parents=True, exist_ok=True)
            self.home.rename(trash / f"{self.home.name}-{time.time_ns()}")


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": fixedrate.percentile(ordered, 50),
        "p95": fixedrate.percentile(ordered, 95),
        "max": ordered[-1] if ordered else float("nan"),
    }


async def _writes_seen(rig: Replicas, callers: list[generate.GeneratedCaller], count: int, seed: int) -> dict[str, Any]:
    """`count` facts written on A, one at a time, each timed until B's answer carries it."""
    from benchmarks import run

    a, b = rig.running["a"], rig.running["b"]
    rng = random.Random(seed)
    writer, reader = Connection(servers.HOST, a.port), Connection(servers.HOST, b.port)
    rows: list[dict[str, float]] = []
    missed, failures = 0, 0
    for n, caller in enumerate(rng.sample(callers, count)):
        # A random phase against B's fetch rounds (seen right after one, the next write would wait a full round).
        await asyncio.sleep(rng.uniform(0.2, 0.2 + POLL_SECONDS))
        token = f"sync{n}x{secrets.token_hex(4)}"
        sent_at, sent = time.time(), time.perf_counter()
        body = json.dumps({"fact": f"Synced fact {token}"}).encode()
        status, _ = await writer.request("POST", f"/api/memory/{caller.key}", body, run.ADMIN)
        acked = time.perf_counter()
        if status != 200:
            failures += 1
            continue
        seen = await run._poll_preview(reader, caller.key, token, _SEEN_TIMEOUT_SECONDS)
        if seen is None:
            missed += 1
            continue
        pushed_at = next((t for t, _ in rig.remote.pushes() if t >= sent_at), None)
        fetched_at, merged_at = await _fetched_and_merged(reader, sent_at)
        rows.append(
            {
                "seen_ms": (seen - sent) * 1000,
                "ack_ms": (acked - sent) * 1000,
                "on_remote_ms": (pushed_at - sent_at) * 1000 if pushed_at else float("nan"),
                "fetched_by_b_ms": (fetched_at - sent_at) * 1000 if fetched_at else float("nan"),
                "merged_on_b_ms": (merged_at - sent_at) * 1000 if merged_at else float("nan"),
            }
        )
    await writer.close()
    await reader.close()
    seen_ms = [row["seen_ms"] for row in rows]
    out: dict[str, Any] = {"writes": count, "missed": missed, "failures": failures, "latencies_ms": seen_ms}
    out |= _summary(seen_ms)
    out["steps_p50_ms"] = {step: _median([row[step] for row in rows]) for step in STEPS}
    out["each"] = rows
    return out


def _median(values: list[float]) -> float:
    known = [v for v in values if not math.isnan(v)]
    return statistics.median(known) if known else math.nan


async def _fetched_and_merged(conn: Connection, since: float) -> tuple[float | None, float | None]:
    """When B last fetched, and when it finished the merge that brought a change written at `since` (wall clock).

    The answer may carry the change before the merge is noted (the watcher reads files as git writes
    them), so the merge time is waited for, briefly.
    """
    from benchmarks import run

    deadline = time.monotonic() + 3
    fetched: float | None = None
    while True:
        status = (await conn.json("GET", "/health", headers=run.ADMIN)).get("sync") or {}
        # The first look: a later one may already see the next round's fetch.
        fetched = status.get("last_fetch_at") if fetched is None else fetched
        merged = status.get("last_merge_at")
        if merged is not None and merged >= since:
            return fetched, merged
        if time.monotonic() > deadline:
            return fetched, None
        await asyncio.sleep(0.01)


def _visibility_line(label: str, out: dict[str, Any]) -> None:
    from benchmarks import run

    steps = out["steps_p50_ms"]
    run.log(
        f"  {label}: p50 {out['p50']:.0f} ms, p95 {out['p95']:.0f} ms, max {out['max']:.0f} ms over "
        f"{len(out['latencies_ms'])} writes, {out['missed']} missed, {out['failures']} failed; medians: acknowledged "
        f"{steps['ack_ms']:.0f} ms, on the remote {steps['on_remote_ms']:.0f} ms, fetched by B "
        f"{steps['fetched_by_b_ms']:.0f} ms, merged on B {steps['merged_on_b_ms']:.0f} ms"
    )


def scenario_visibility(bench: Bench) -> None:
    """A write on replica A → in replica B's answer: with push events, then without (SYNC_SECONDS=1)."""
    from benchmarks import run

    count = bench.config.sync_writes
    _, callers = bench.vault(bench.config.small)
    out: dict[str, Any] = {"sync_seconds": POLL_SECONDS, "no_polling_seconds": float(NO_POLLING_SECONDS)}
    with Replicas(bench, "visibility") as rig:
        rig.set_up({"SYNC_SECONDS": NO_POLLING_SECONDS})
        rig.remote.push_events([f"{server.url}/webhook/git" for server in rig.running.values()])
        for server in rig.running.values():
            server.wait_quiet(share=0.15)
        run.log(
            f"sync-visibility: {count} writes on A, push events to both replicas, SYNC_SECONDS={NO_POLLING_SECONDS}"
        )
        out["push_events"] = asyncio.run(_writes_seen(rig, callers, count, seed=71))
        _visibility_line("with push events", out["push_events"])
        rig.remote.push_events([])
        for name in ("a", "b"):
            rig.start(name, {"SYNC_SECONDS": f"{POLL_SECONDS:g}"})
        for server in rig.running.values():
            server.wait_quiet(share=0.15)
        run.log(f"sync-visibility: {count} writes on A, no push events, SYNC_SECONDS={POLL_SECONDS:g}")
        out["polling"] = asyncio.run(_writes_seen(rig, callers, count, seed=72))
        _visibility_line(f"SYNC_SECONDS={POLL_SECONDS:g} alone", out["polling"])
    bench.results["sync_visibility"] = out


async def _pushing_writes(
    server: servers.Server, callers: list[generate.GeneratedCaller], rate: float, seconds: float
) -> dict[str, Any]:
    """API writes on `server` at `rate` per second (open loop) for `seconds`; its sync loop pushes them."""
    from benchmarks import run

    rng = random.Random(81)
    pool = asyncio.Queue[Connection]()
    for _ in range(8):
        pool.put_nowait(Connection(servers.HOST, server.port))
    stats: dict[str, Any] = {"writes_ok": 0, "writes_failed": 0, "failures": {}}
    tasks: set[asyncio.Task[None]] = set()

    async def write(n: int) -> None:
        conn = await pool.get()
        try:
            body = json.dumps({"fact": f"Pushed from B {n} {secrets.token_hex(4)}"}).encode()
            status, data = await conn.request("POST", f"/api/memory/{rng.choice(callers).key}", body, run.ADMIN)
            failure = None if status == 200 else f"{status} {data[:120].decode(errors='replace')}"
        except (OSError, HttpError, asyncio.IncompleteReadError) as exc:
            failure = type(exc).__name__
        finally:
            pool.put_nowait(conn)
        if failure is None:
            stats["writes_ok"] += 1
        else:
            stats["writes_failed"] += 1
            stats["failures"][failure] = stats["failures"].get(failure, 0) + 1

    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        task = asyncio.create_task(write(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
    await asyncio.gather(*tasks, return_exceptions=True)
    while not pool.empty():
        await pool.get_nowait().close()
    return stats


def _merges(server: servers.Server) -> int:
    """How many merges from the remote the replica made since it started (0 without sync)."""
    return int((server.health().get("sync") or {}).get("merges", 0))


def scenario_busy(bench: Bench) -> None:
    """Personalize at the fixed rate on A, syncing every second while B pushes writes; A without sync alternating."""
    from benchmarks import run

    cfg = bench.config
    _, callers = bench.vault(cfg.small)
    rng = random.Random(62)
    order: list[bool] = []
    for n in range(cfg.latency_rounds):
        order += [True, False] if n % 2 == 0 else [False, True]
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    every = {"SYNC_SECONDS": f"{POLL_SECONDS:g}"}
    with Replicas(bench, "busy") as rig:
        rig.set_up(every)
        bodies = rig.home / "personalize-bodies.jsonl"
        chosen = rng.sample(callers, min(2000, len(callers)))
        bodies.write_text("".join(run.personalize_body(caller, rng) + "\n" for caller in chosen), encoding="utf-8")
        syncing = True
        for n, sync in enumerate(order, 1):
            if sync != syncing:
                rig.start("a", every, sync)
                syncing = sync
            a, b = rig.running["a"], rig.running["b"]
            b.wait_quiet(share=0.15)
            a.wait_quiet(share=0.15)
            label = "syncing" if sync else "without GIT_REMOTE"
            run.log(
                f"sync-busy: {cfg.rate:g} req/s on replica A {label}, B taking {cfg.sync_writes_per_s:g} writes/s "
                f"and pushing them, run {n} of {len(order)}"
            )
            commits, merges = rig.remote.commits(), _merges(a)
            proc = run._fixed_rate(bench, a, bodies, cfg.busy_seconds)
            seconds = cfg.warmup_seconds + cfg.busy_seconds + 0.5
            stats = asyncio.run(_pushing_writes(b, callers, cfg.sync_writes_per_s, seconds))
            result = run._collect(proc)
            stats |= {"remote_commits": rig.remote.commits() - commits, "merges_on_a": _merges(a) - merges}
            result["background"] = stats
            run._latency_line(f"replica A, {label}", result)
            run.log(f"  background: {stats}")
            runs[sync].append(result)
    synced, alone = run._median_result(runs[True]), run._median_result(runs[False])
    p99 = server_side(synced)["p99"], server_side(alone)["p99"]
    run.log(f"  p99 server-side {p99[0]:.2f} ms syncing, {p99[1]:.2f} ms without: {p99[0] / p99[1]:.2f}x")
    bench.results["sync_busy"] = {
        "sync": synced,
        "no_sync": alone,
        "sync_runs": runs[True],
        "no_sync_runs": runs[False],
        "ratio_p99": p99[0] / p99[1],
        "order": ["sync" if sync else "no sync" for sync in order],
        "sync_seconds": POLL_SECONDS,
        "writes_per_s": cfg.sync_writes_per_s,
    }
