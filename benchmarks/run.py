"""The benchmark of SPEC §10: every figure, side by side with a baseline, written to BENCHMARKS.md.

`scripts/bench` runs this module. It generates (or reuses) synthetic vaults, starts the real
service with its own `serve` command and the bare Litestar baseline under the same flags, drives
them from separate processes over real HTTP on loopback, and writes the report.

Scenarios (`--only NAME`, repeatable):

- `startup`: process start -> `GET /health` 200, and RSS, for the small and large vault: one
  first start without the derived index cache, then restarts that find it.
- `throughput`: personalize flat out (wrk, 1 thread, 32 connections) against the service and the
  baseline, alternating A/B/B/A; the ratio of medians.
- `latency`: personalize at a fixed 500 req/s (open loop), p50/p90/p99; the baseline alongside.
- `latency-busy`: the same while API writes (~20/s), hand edits (every 100 ms) and a 1 s
  reconcile scan run.
- `hand-edit`: rewrite a caller file, then call until the answer shows the change.
- `writes`: 32 concurrent API writers; acknowledged writes/s, then every acknowledged fact is
  checked in the files and in git's HEAD.
- `post-call`: signed post-call webhook, then call until the answer carries the summary.
- `post-call-inbox`: post-call webhook → durably held and answered; SIGKILL during an event storm
  (`benchmarks/inbox.py`).
- `sync-visibility`, `sync-busy`: two replicas syncing through a git remote (`benchmarks/sync.py`).
- `tenants`: 100 tenants of 1,000 callers in one process: ready time and RSS from the derived
  caches, personalize latency at 500 req/s spread over the tenants (`benchmarks/tenants.py`).
- `recall`: one `recall` tool call's server work (index lookup, ranking) over 10,000 callers with 200
  calls each, in a fresh interpreter (`benchmarks/recall.py`).
- `probes`: in-process costs and the event-loop cost of starting git (diagnostics for the notes).

`--quick` shrinks sizes and durations for a smoke run; it and `--only` write the report to
bench-out/BENCHMARKS-partial.md, so BENCHMARKS.md only ever comes from a full run. Raw numbers of
every run go to bench-out/results.json, server logs to bench-out/run/logs/. `--rerender` rewrites
the report from the last results.json without measuring anything.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import fixedrate, generate, inbox, loadgen, machine, probes, recall, report, servers, sync, tenants
from benchmarks.httpclient import Connection, HttpError
from server import edits

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
SCENARIOS: tuple[str, ...] = ("startup", "throughput", "latency", "latency-busy", "hand-edit", "writes", "post-call")
SCENARIOS += ("post-call-inbox",)
SCENARIOS += ("sync-visibility", "sync-busy", "tenants", "recall", "probes")
FIXTURE = ROOT / "tests" / "fixtures" / "elevenlabs" / "post_call_transcription.json"


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and durations of one run."""

    small: int = 10_000
    large: int = 100_000
    startup_repeats: int = 3
    throughput_seconds: float = 8
    throughput_rounds: int = 3  # each round is one service run and one baseline run
    throughput_connections: int = 32
    warmup_seconds: float = 2
    rate: float = 500
    latency_seconds: float = 6
    latency_rounds: int = 3  # each round is one service run and one baseline run
    busy_seconds: float = 10
    busy_writes_per_s: float = 20
    busy_edit_interval_s: float = 0.1
    hand_edits: int = 120
    write_seconds: float = 10
    writers: int = 32
    post_calls: int = 40
    sync_writes: int = 40  # per mode of sync-visibility
    sync_writes_per_s: float = 10  # on replica B during sync-busy
    recall_callers: int = 10_000
    recall_calls: int = 200  # per caller
    recall_queries: int = 5_000
    seed: int = 1


QUICK = Config(
    small=2_000,
    large=10_000,
    startup_repeats=1,
    throughput_seconds=3,
    throughput_rounds=1,
    warmup_seconds=1,
    latency_seconds=3,
    latency_rounds=1,
    busy_seconds=4,
    hand_edits=30,
    write_seconds=3,
    post_calls=10,
    sync_writes=10,
    recall_callers=1_000,
    recall_queries=1_000,
)


def revision() -> str:
    """The project's commit, and whether `server/` had uncommitted changes when the run started."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "server"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes in server/)" if dirty else head


def log(message: str) -> None:
    """Progress on stderr, with the time since the run started."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


_STARTED = time.monotonic()


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def personalize_body(caller: generate.GeneratedCaller, rng: random.Random) -> str:
    """A conversation-initiation webhook body for an inbound call from `caller`."""
    return json.dumps(
        {
            "caller_id": caller.e164,
            "agent_id": "agent_bench0000000000000000000000",
            "called_number": servers.AGENT_NUMBER,
            "call_sid": "CA" + f"{rng.getrandbits(128):032x}",
            "conversation_id": "conv_" + f"{rng.getrandbits(112):028x}",
        },
        separators=(",", ":"),
    )


AUTH = {"Authorization": f"Bearer {servers.WEBHOOK_SECRET}"}
# A withheld caller ID: the new-caller answer, and nothing to record after it (SPEC §6).
WITHHELD_BODY = json.dumps({"caller_id": "anonymous", "agent_id": "agent_bench", "called_number": "+14155550199"})
ADMIN = {"Authorization": f"Bearer {servers.ADMIN_KEY}"}


class Bench:
    """One benchmark run: the vaults, the servers under test and the results gathered so far."""

    def __init__(self, config: Config, keep: bool) -> None:
        self.config = config
        self.keep = keep
        self.rng = random.Random(config.seed)
        self.cache = OUT / "vaults"
        self.scratch = OUT / "run"
        self.logs = self.scratch / "logs"
        self.results: dict[str, Any] = {}
        self._service: servers.Server | None = None
        self._service_extra: dict[str, str] = {}
        self._baseline: servers.Server | None = None
        self._small: tuple[Path, list[generate.GeneratedCaller]] | None = None
        self._work: Path | None = None
        self.wrk = loadgen.ensure_wrk(log)

    # -- vaults --------------------------------------------------------------------------------

    def vault(self, size: int) -> tuple[Path, list[generate.GeneratedCaller]]:
        """A pristine cached vault of `size` callers (generated on first use)."""
        params = generate.Params(size, self.config.seed, servers.PHONE_HASH_KEY, _today())
        if size == self.config.small and self._small is not None:
            return self._small
        log(f"vault of {size} callers: checking the cache")
        found = generate.cached_vault(self.cache, f"callers-{size}", params, log)
        if size == self.config.small:
            self._small = found
        return found

    def work_vault(self) -> tuple[Path, list[generate.GeneratedCaller]]:
        """A scratch copy of the small vault that scenarios may write to (one per run)."""
        source, callers = self.vault(self.config.small)
        if self._work is None:
            dest = self.scratch / f"work-{self.config.small}"
            log(f"copying the {self.config.small}-caller vault to {dest}")
            self._work = generate.working_copy(source, dest)
        return self._work, callers

    # -- servers -------------------------------------------------------------------------------

    def service(self, **extra: str) -> servers.Server:
        """The service on the work vault, (re)started when its extra settings differ."""
        if self._service is not None and self._service_extra == extra and self._service.proc.poll() is None:
            return self._service
        self.stop_service()
        path, _ = self.work_vault()
        label = "-".join(f"{k.lower()}{v}" for k, v in extra.items()) or "default"
        log(f"starting the service on {path} ({label})")
        self._service = servers.start_service(path, self.logs / f"service-{label}.log", ROOT, **extra)
        self._service_extra = dict(extra)
        log(f"  ready after {self._service.ready_after:.2f} s on port {self._service.port}")
        return self._service

    def stop_service(self) -> None:
        """Stop the service if it runs (gracefully: pending commits are written)."""
        if self._service is not None:
            self._service.stop()
            self._service = None

    def baseline(self) -> servers.Server:
        """The bare Litestar baseline, serving a real personalize answer of the service."""
        if self._baseline is not None and self._baseline.proc.poll() is None:
            return self._baseline
        body = self.baseline_body()
        path = self.scratch / "baseline-answer.json"
        path.write_bytes(body)
        log(f"starting the baseline (answer of {len(body)} bytes)")
        self._baseline = servers.start_baseline(path, self.scratch / "baseline-vault", self.logs / "baseline.log", ROOT)
        return self._baseline

    def baseline_body(self) -> bytes:
        """A real personalize answer: the median-sized one of 51 random callers (via the preview API)."""
        if "baseline_body" in self.results:
            return bytes(self.results["baseline_body"], "utf-8")
        svc = self.service()
        _, callers = self.work_vault()
        answers = []
        for caller in random.Random(5).sample(callers, 51):
            status, data = _blocking_get(svc.port, f"/api/callers/{caller.key}/preview", ADMIN)
            if status != 200:
                raise RuntimeError(f"preview answered {status}: {data[:200]!r}")
            answers.append(data)
        answers.sort(key=len)
        body = answers[len(answers) // 2]
        self.results["baseline_body"] = body.decode()
        self.results["answer_sizes"] = {"min": len(answers[0]), "median": len(body), "max": len(answers[-1])}
        return body

    def close(self) -> None:
        """Stop every server; drop the scratch vault unless --keep."""
        self.stop_service()
        if self._baseline is not None:
            self._baseline.stop()
            self._baseline = None
        if self._work is not None and not self.keep:
            shutil.rmtree(self._work, ignore_errors=True)
        generate.empty_trash(self.cache)

    def bodies_file(self, count: int = 2000) -> tuple[Path, list[str]]:
        """Personalize bodies for random callers of the small vault, one per line."""
        _, callers = self.work_vault()
        chosen = self.rng.sample(callers, min(count, len(callers)))
        bodies = [personalize_body(c, self.rng) for c in chosen]
        path = self.scratch / "personalize-bodies.jsonl"
        path.write_text("\n".join(bodies) + "\n", encoding="utf-8")
        return path, bodies


def _raw(bodies: list[str]) -> list[bytes]:
    """Raw personalize requests for the Python fallback of wrk."""
    headers = [f"{k}: {v}" for k, v in AUTH.items()]
    return fixedrate.build_requests(servers.HOST, 0, "/webhook/personalize", [b.encode() for b in bodies], headers)


def _blocking_get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection(servers.HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _pct(values: list[float], q: float) -> float:
    return fixedrate.percentile(sorted(values), q)


# -- scenarios ---------------------------------------------------------------------------------


def _derived_cache(root: Path) -> Path | None:
    """Where the service keeps its derived index cache for a vault, if this version has one."""
    try:
        from server import cache
    except ImportError:
        return None
    path_for = getattr(cache, "path_for", None)
    return path_for(root) if path_for else None


def _start_once(bench: Bench, path: Path, label: str) -> dict[str, Any]:
    server = servers.start_service(path, bench.logs / f"startup-{label}.log", ROOT, timeout=300)
    try:
        health = server.health()
        time.sleep(0.5)  # the watcher and the git writer settle
        memory = server.memory_kb()
        worker = server.children_rss_kb()
    finally:
        server.stop()
    log(
        f"  ready after {server.ready_after:.2f} s, RSS {memory.get('VmRSS', 0) / 1024:.0f} MiB "
        f"(+ {worker / 1024:.0f} MiB worker process)"
    )
    return {
        "ready_s": server.ready_after,
        "service_ready_s": health.get("ready_seconds"),
        "callers": health.get("callers"),
        "files_with_errors": health.get("files_with_errors"),
        "rss_kb": memory.get("VmRSS"),
        "peak_rss_kb": memory.get("VmHWM"),
        "worker_rss_kb": worker,
    }


def scenario_startup(bench: Bench) -> None:
    """Ready time (spawn -> /health 200) and RSS for the small and the large vault.

    The first start has no derived index cache (it is deleted, so every file is parsed); the
    restarts after it find the cache the service left, as any restart in service would.
    """
    cfg = bench.config
    out: dict[str, Any] = {}
    probe = [
        sys.executable,
        "-c",
        "import time; t = time.perf_counter(); import server.cli, server.app, uvicorn; print(time.perf_counter() - t)",
    ]
    imports = [float(subprocess.run(probe, capture_output=True, text=True, check=True, cwd=ROOT).stdout) for _ in "ab"]
    out["import_seconds"] = min(imports)
    for size in (cfg.small, cfg.large):
        path, _ = bench.vault(size)
        derived = _derived_cache(path)
        if derived is not None:
            derived.unlink(missing_ok=True)
        log(f"startup: {size} callers, first start (no derived cache: every file parsed)")
        first = _start_once(bench, path, f"{size}-first")
        restarts = []
        for n in range(cfg.startup_repeats):
            log(f"startup: {size} callers, restart {n + 1} of {cfg.startup_repeats}")
            restarts.append(_start_once(bench, path, f"{size}-restart"))
        if generate.git(path, "status", "--porcelain", "--untracked-files=all").strip():
            raise RuntimeError(f"starting the service changed the pristine vault {path}")
        runs = [first, *restarts]
        out[str(size)] = {
            "first": first,
            "restarts": restarts,
            "has_derived_cache": derived is not None,
            "ready_s": statistics.median(r["ready_s"] for r in restarts),
            "rss_kb": max(r["rss_kb"] for r in runs),
            "peak_rss_kb": max(r["peak_rss_kb"] for r in runs),
            "worker_rss_kb": max(r.get("worker_rss_kb", 0) for r in runs),
        }
    bench.results["startup"] = out


def scenario_throughput(bench: Bench) -> None:
    """Flat-out personalize against the service and the baseline, A/B/B/A..., ratio of medians."""
    cfg = bench.config
    svc, base = bench.service(), bench.baseline()
    _, bodies = bench.bodies_file()
    lua = loadgen.write_lua(bench.scratch / "personalize.lua", bodies, AUTH, "/webhook/personalize")
    raw = _raw(bodies)
    conns, seconds = cfg.throughput_connections, cfg.throughput_seconds

    def one(server: servers.Server, duration: float) -> dict[str, Any]:
        if server is svc:
            svc.wait_quiet()
        own0, children0 = server.cpu_split()
        result = loadgen.full_speed(bench.wrk, server.port, lua, raw, duration, conns)
        drained = svc.wait_quiet() if server is svc else 0.0
        own, children = server.cpu_split()
        own, children = own - own0, children - children0
        row = dataclasses.asdict(result) | {"drain_s": drained, "cpu_s": own + children}
        row["cpu_us_per_request"] = (own + children) / result.requests * 1e6
        row["git_cpu_us_per_request"] = children / result.requests * 1e6
        log(
            f"  {server.name}: {result.requests_per_s:,.0f} req/s, p99 {result.latency_p99_ms} ms, "
            f"{result.errors} errors, drain {drained:.2f} s, {row['cpu_us_per_request']:.0f} us CPU/request"
        )
        return row

    log("throughput: warm-up")
    one(svc, cfg.warmup_seconds)
    one(base, cfg.warmup_seconds)
    service_runs, baseline_runs = [], []
    order = []
    for n in range(cfg.throughput_rounds):
        order += [svc, base] if n % 2 == 0 else [base, svc]
    for n, server in enumerate(order, 1):
        log(f"throughput: run {n} of {len(order)} ({server.name})")
        (service_runs if server is svc else baseline_runs).append(one(server, seconds))
    log("throughput: diagnostic run with withheld callers (the answer path without the write-back)")
    withheld_lua = loadgen.write_lua(bench.scratch / "withheld.lua", [WITHHELD_BODY], AUTH, "/webhook/personalize")
    svc.wait_quiet()
    cpu0 = svc.cpu_seconds()
    result = loadgen.full_speed(bench.wrk, svc.port, withheld_lua, _raw([WITHHELD_BODY]), seconds, conns)
    withheld = dataclasses.asdict(result) | {"cpu_us_per_request": (svc.cpu_seconds() - cpu0) / result.requests * 1e6}
    log(f"  withheld: {result.requests_per_s:,.0f} req/s, {withheld['cpu_us_per_request']:.0f} us CPU/request")
    worker_kb = svc.children_rss_kb()  # the worker process after it has recorded calls
    a = statistics.median(r["requests_per_s"] for r in service_runs)
    b = statistics.median(r["requests_per_s"] for r in baseline_runs)
    bench.results["throughput"] = {
        "service": service_runs,
        "baseline": baseline_runs,
        "service_rps": a,
        "baseline_rps": b,
        "ratio": a / b,
        "order": [s.name for s in order],
        "withheld": withheld,
        "connections": conns,
        "seconds": seconds,
        "tool": loadgen.wrk_version(bench.wrk),
        "answer_sizes": bench.results.get("answer_sizes"),
        "worker_rss_kb": worker_kb,
    }


def _fixed_rate(bench: Bench, server: servers.Server, bodies_path: Path, seconds: float) -> subprocess.Popen[str]:
    """Start the fixed-rate client against `server` (it runs warm-up + `seconds`, then prints JSON)."""
    cfg = bench.config
    args = [
        sys.executable,
        "-m",
        "benchmarks.fixedrate",
        "--port",
        str(server.port),
        "--rate",
        str(cfg.rate),
        "--duration",
        str(seconds),
        "--warmup",
        str(cfg.warmup_seconds),
        "--connections",
        "32",
        "--bodies",
        str(bodies_path),
        *(x for k, v in AUTH.items() for x in ("--header", f"{k}: {v}")),
    ]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _collect(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"the fixed-rate client failed: {err.strip()}")
    return json.loads(out)  # type: ignore[no-any-return]


def _latency_line(name: str, result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    log(
        f"  {name}: p50 {lat['p50']:.2f} / p90 {lat['p90']:.2f} / p99 {lat['p99']:.2f} / max {lat['max']:.1f} ms "
        f"(server-side p99 {(result.get('server_side_ms') or {}).get('p99', float('nan')):.2f} ms) "
        f"at {result['achieved_rate']:.0f} req/s, statuses {result['statuses']}"
    )


def _median_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Fixed-rate runs folded into one: the median of each percentile across runs (robust to one noisy run)."""
    statuses: dict[str, int] = {}
    for run in runs:
        for code, count in run["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    return {
        "latency_ms": {k: statistics.median(r["latency_ms"][k] for r in runs) for k in runs[0]["latency_ms"]},
        "service_ms": {k: statistics.median(r["service_ms"][k] for r in runs) for k in runs[0]["service_ms"]},
        "server_side_ms": (
            {k: statistics.median(r["server_side_ms"][k] for r in runs) for k in runs[0]["server_side_ms"]}
            if all(r.get("server_side_ms") for r in runs)
            else None
        ),
        "achieved_rate": statistics.median(r["achieved_rate"] for r in runs),
        "max_send_lateness_ms": max(r["max_send_lateness_ms"] for r in runs),
        "statuses": statuses,
        "runs": len(runs),
    }


def scenario_latency(bench: Bench) -> None:
    """Personalize at a fixed rate, open loop, on the service and the baseline in alternation (A/B/B/A...)."""
    cfg = bench.config
    svc, base = bench.service(), bench.baseline()
    bodies_path, _ = bench.bodies_file()
    order: list[servers.Server] = []
    for n in range(cfg.latency_rounds):
        order += [svc, base] if n % 2 == 0 else [base, svc]
    runs: dict[str, list[dict[str, Any]]] = {svc.name: [], base.name: []}
    for n, server in enumerate(order, 1):
        svc.wait_quiet()
        log(f"latency: {cfg.rate:g} req/s for {cfg.latency_seconds:g} s, run {n} of {len(order)} ({server.name})")
        result = _collect(_fixed_rate(bench, server, bodies_path, cfg.latency_seconds))
        _latency_line(server.name, result)
        runs[server.name].append(result)
    withheld_path = bench.scratch / "withheld-bodies.jsonl"
    withheld_path.write_text(WITHHELD_BODY + "\n", encoding="utf-8")
    svc.wait_quiet()
    log("latency: diagnostic run on the service with withheld callers (no write-back)")
    withheld = _collect(_fixed_rate(bench, svc, withheld_path, cfg.latency_seconds))
    _latency_line("service, withheld", withheld)
    bench.results["latency"] = {
        "service": _median_result(runs[svc.name]),
        "baseline": _median_result(runs[base.name]),
        "service_runs": runs[svc.name],
        "baseline_runs": runs[base.name],
        "withheld": withheld,
    }


def _hand_edit(path: Path, line: str, style: str) -> None:
    """Add a fact to a caller file as a person's editor would: in place, or save-by-rename."""
    text = path.read_text(encoding="utf-8")
    updated = edits.append_to_section(text, "Facts", line)
    if style == "in-place":
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(updated)
    else:
        tmp = path.with_name(f".{path.name}.edit.tmp")
        tmp.write_text(updated, encoding="utf-8")
        os.replace(tmp, path)


async def _background(
    bench: Bench, svc: servers.Server, seconds: float, callers: list[generate.GeneratedCaller], root: Path
) -> dict[str, Any]:
    """API writes at a steady rate plus a hand edit every interval, for `seconds`."""
    cfg = bench.config
    rng = random.Random(11)
    pool = [Connection(servers.HOST, svc.port) for _ in range(16)]
    free = asyncio.Queue[Connection]()
    for conn in pool:
        free.put_nowait(conn)
    stats: dict[str, Any] = {"writes_ok": 0, "writes_failed": 0, "hand_edits": 0, "failures": {}}
    tasks = set()

    async def write(n: int) -> None:
        conn = await free.get()
        try:
            caller = rng.choice(callers)
            body = json.dumps({"fact": f"Busy-run fact {n} {secrets.token_hex(4)}"}).encode()
            try:
                status, data = await conn.request("POST", f"/api/memory/{caller.key}", body, ADMIN)
                failure = None if status == 200 else f"{status} {data[:120].decode(errors='replace')}"
            except (OSError, HttpError, asyncio.IncompleteReadError) as exc:
                failure = type(exc).__name__
            if failure is None:
                stats["writes_ok"] += 1
            else:
                stats["writes_failed"] += 1
                stats["failures"][failure] = stats["failures"].get(failure, 0) + 1
        finally:
            free.put_nowait(conn)

    async def writer() -> None:
        start, n = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            task = asyncio.create_task(write(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
            await asyncio.sleep(max(0.0, start + n / cfg.busy_writes_per_s - time.monotonic()))

    async def editor() -> None:
        start, n = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            caller = rng.choice(callers)
            try:
                _hand_edit(root / caller.relpath, f"- Busy-run hand edit {n}", "in-place" if n % 2 else "rename")
                stats["hand_edits"] += 1
            except FileNotFoundError:
                pass
            n += 1
            await asyncio.sleep(max(0.0, start + n * cfg.busy_edit_interval_s - time.monotonic()))

    await asyncio.gather(writer(), editor())
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    for conn in pool:
        await conn.close()
    return stats


def scenario_latency_busy(bench: Bench) -> None:
    """Fixed-rate personalize while API writes, hand edits and a 1 s reconcile scan run."""
    cfg = bench.config
    svc = bench.service(RECONCILE_SECONDS="1")
    root, callers = bench.work_vault()
    bodies_path, _ = bench.bodies_file()
    # A reconcile scan every second costs ~5% of a core on 10k files: that much is "quiet" here.
    svc.wait_quiet(share=0.15)
    log(
        f"latency-busy: {cfg.rate:g} req/s with {cfg.busy_writes_per_s:g} API writes/s, a hand edit every "
        f"{cfg.busy_edit_interval_s * 1000:g} ms and RECONCILE_SECONDS=1"
    )
    proc = _fixed_rate(bench, svc, bodies_path, cfg.busy_seconds)
    stats = asyncio.run(_background(bench, svc, cfg.warmup_seconds + cfg.busy_seconds + 0.5, callers, root))
    result = _collect(proc)
    _latency_line("service (busy)", result)
    log(f"  background: {stats}")
    bench.results["latency_busy"] = {"service": result, "background": stats}
    bench.stop_service()


async def _poll_until(conn: Connection, body: bytes, token: str, timeout: float = 10) -> float | None:
    """Call personalize (every 2 ms) until the answer contains `token`; when it did, or None."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        status, data = await conn.request("POST", "/webhook/personalize", body, AUTH)
        if status == 200 and token.encode() in data:
            return time.perf_counter()
        await asyncio.sleep(0.002)
    return None


async def _poll_preview(conn: Connection, key: str, token: str, timeout: float = 10) -> float | None:
    """Ask the preview API (the same answer, recorded nowhere) every 2 ms until it contains `token`."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        status, data = await conn.request("GET", f"/api/callers/{key}/preview", b"", ADMIN)
        if status == 200 and token.encode() in data:
            return time.perf_counter()
        await asyncio.sleep(0.002)
    return None


async def _hand_edits(bench: Bench, svc: servers.Server, count: int, probe: str) -> dict[str, Any]:
    root, callers = bench.work_vault()
    rng = random.Random(21 if probe == "personalize" else 22)
    conn = Connection(servers.HOST, svc.port)
    latencies, missed = [], 0
    for n, caller in enumerate(rng.sample(callers, count)):
        token = f"hand-edit-{n}-{secrets.token_hex(4)}"
        body = personalize_body(caller, rng).encode()
        style = "rename" if n % 2 else "in-place"
        started = time.perf_counter()
        _hand_edit(root / caller.relpath, f"- Bench {token}", style)
        if probe == "personalize":
            seen = await _poll_until(conn, body, token)
        else:
            seen = await _poll_preview(conn, caller.key, token)
        if seen is None:
            missed += 1
        else:
            latencies.append((seen - started) * 1000)
        await asyncio.sleep(0.02)
    await conn.close()
    return {"latencies_ms": latencies, "missed": missed}


def scenario_hand_edit(bench: Bench) -> None:
    """Rewrite a caller file with a new fact; call until the answer carries it."""
    svc = bench.service()
    svc.wait_quiet()
    log(f"hand-edit: {bench.config.hand_edits} edits (half in place, half save-by-rename)")
    out = _edit_summary(asyncio.run(_hand_edits(bench, svc, bench.config.hand_edits, "personalize")))
    svc.wait_quiet()
    count = max(20, bench.config.hand_edits // 3)
    log(f"hand-edit: diagnostic, {count} edits seen through the preview API (no call recorded, so no commits)")
    out["preview"] = _edit_summary(asyncio.run(_hand_edits(bench, svc, count, "preview")))
    bench.results["hand_edit"] = out


def _edit_summary(out: dict[str, Any]) -> dict[str, Any]:
    lat = out["latencies_ms"]
    out |= {"p50": _pct(lat, 50), "p95": _pct(lat, 95), "max": max(lat) if lat else float("nan")}
    log(f"  p50 {out['p50']:.1f} ms, p95 {out['p95']:.1f} ms, max {out['max']:.1f} ms, missed {out['missed']}")
    return out


async def _writers(bench: Bench, svc: servers.Server) -> dict[str, Any]:
    _, callers = bench.work_vault()
    rng = random.Random(31)
    acked: list[tuple[str, str, str]] = []
    latencies: list[float] = []
    failures: dict[str, int] = {}
    seconds = bench.config.write_seconds

    async def writer(w: int) -> None:
        conn = Connection(servers.HOST, svc.port)
        n = 0
        while time.monotonic() < end:
            caller = rng.choice(callers)
            fact = f"Bench write {w}-{n} {secrets.token_hex(5)}"
            n += 1
            sent = time.perf_counter()
            status, data = await conn.request(
                "POST", f"/api/memory/{caller.key}", json.dumps({"fact": fact}).encode(), ADMIN
            )
            if status == 200:
                latencies.append((time.perf_counter() - sent) * 1000)
                acked.append((caller.key, fact, json.loads(data)["file"]))
            else:
                failures[str(status)] = failures.get(str(status), 0) + 1
        await conn.close()

    start = time.monotonic()
    end = start + seconds
    await asyncio.gather(*(writer(w) for w in range(bench.config.writers)))
    elapsed = time.monotonic() - start
    return {"acked": acked, "elapsed_s": elapsed, "latencies_ms": latencies, "failures": failures}


def _head_contents(root: Path, relpaths: list[str]) -> dict[str, str]:
    """The committed (HEAD) text of each file, read through one `git cat-file --batch`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {"GIT_CONFIG_GLOBAL": os.devnull}
    query = "".join(f"HEAD:{p}\n" for p in relpaths).encode()
    proc = subprocess.run(
        ["git", "-C", str(root), "cat-file", "--batch"], input=query, env=env, capture_output=True, check=True
    )
    out, pos, contents = proc.stdout, 0, {}
    for relpath in relpaths:
        eol = out.index(b"\n", pos)
        header = out[pos:eol].split()
        pos = eol + 1
        if len(header) < 3 or header[1] != b"blob":
            continue  # "missing": not in HEAD
        size = int(header[2])
        contents[relpath] = out[pos : pos + size].decode("utf-8")
        pos += size + 1
    return contents


def scenario_writes(bench: Bench) -> None:
    """Concurrent API writers; then check every acknowledged fact is in its file and in git HEAD."""
    svc = bench.service()
    root, _ = bench.work_vault()
    svc.wait_quiet()
    before = generate.git(root, "rev-parse", "HEAD").strip()
    log(f"writes: {bench.config.writers} concurrent API writers for {bench.config.write_seconds:g} s")
    out = asyncio.run(_writers(bench, svc))
    # Checked while the service still runs: a write is acknowledged only once committed, so HEAD
    # must already hold every acknowledged fact (stopping the service would commit stragglers).
    acked = out.pop("acked")
    files = sorted({relpath for _, _, relpath in acked})
    committed = _head_contents(root, files)
    on_disk = {p: (root / p).read_text(encoding="utf-8") for p in files}
    lost_git = [fact for _, fact, p in acked if fact not in committed.get(p, "")]
    lost_disk = [fact for _, fact, p in acked if fact not in on_disk[p]]
    commits = int(generate.git(root, "rev-list", "--count", f"{before}..HEAD").strip())
    lat = out.pop("latencies_ms")
    out |= {
        "acknowledged": len(acked),
        "per_s": len(acked) / out["elapsed_s"],
        "files": len(files),
        "commits": commits,
        "lost_in_git": len(lost_git),
        "lost_on_disk": len(lost_disk),
        "lost_examples": (lost_git + lost_disk)[:5],
        "ack_p50_ms": _pct(lat, 50),
        "ack_p99_ms": _pct(lat, 99),
    }
    log(
        f"  {out['acknowledged']} acknowledged in {out['elapsed_s']:.1f} s = {out['per_s']:.0f}/s "
        f"in {commits} commits; "
        f"lost: {len(lost_git)} in git, {len(lost_disk)} on disk; failures {out['failures']}"
    )
    bench.results["writes"] = out


def sign(body: bytes, secret: str, when: int | None = None) -> str:
    """The `ElevenLabs-Signature` header for a post-call body (SPEC §6)."""
    stamp = int(time.time()) if when is None else when
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v0={mac}"


def post_call_body(caller: generate.GeneratedCaller, conversation_id: str, summary: str) -> bytes:
    """The fixture's post-call transcription event, re-addressed to `caller` with a new id and summary."""
    event = json.loads(FIXTURE.read_text(encoding="utf-8"))
    data = event["data"]
    data["conversation_id"] = conversation_id
    data["metadata"]["start_time_unix_secs"] = int(time.time()) - 60
    data["metadata"]["phone_call"]["external_number"] = caller.e164
    data["metadata"]["phone_call"]["call_sid"] = "CA" + secrets.token_hex(16)
    data["analysis"]["transcript_summary"] = summary
    variables = data["conversation_initiation_client_data"]["dynamic_variables"]
    variables["system__caller_id"] = caller.e164
    variables["system__conversation_id"] = conversation_id
    return json.dumps(event).encode()


async def _post_calls(bench: Bench, svc: servers.Server) -> dict[str, Any]:
    _, callers = bench.work_vault()
    rng = random.Random(41)
    conn = Connection(servers.HOST, svc.port)
    latencies, acks, missed, failures = [], [], 0, 0
    for n, caller in enumerate(rng.sample(callers, bench.config.post_calls)):
        token = f"postcall{n}x{secrets.token_hex(4)}"
        body = post_call_body(caller, f"conv_bench{n}{secrets.token_hex(8)}", f"Bench summary {token}.")
        call = personalize_body(caller, rng).encode()
        started = time.perf_counter()
        headers = {"ElevenLabs-Signature": sign(body, servers.ELEVENLABS_SECRET)}
        status, _data = await conn.request("POST", "/webhook/post-call", body, headers)
        acks.append((time.perf_counter() - started) * 1000)
        if status != 200:
            failures += 1
            continue
        seen = await _poll_until(conn, call, token)
        if seen is None:
            missed += 1
        else:
            latencies.append((seen - started) * 1000)
        await asyncio.sleep(0.02)
    await conn.close()
    return {"latencies_ms": latencies, "ack_ms": acks, "missed": missed, "failures": failures}


def scenario_post_call(bench: Bench) -> None:
    """Signed post-call webhook; call until the answer carries the new summary."""
    svc = bench.service()
    svc.wait_quiet()
    log(f"post-call: {bench.config.post_calls} webhooks")
    out = asyncio.run(_post_calls(bench, svc))
    lat = out["latencies_ms"]
    out |= {
        "p50": _pct(lat, 50),
        "p95": _pct(lat, 95),
        "max": max(lat) if lat else float("nan"),
        "ack_p50": _pct(out["ack_ms"], 50),
    }
    log(f"  p50 {out['p50']:.0f} ms, p95 {out['p95']:.0f} ms, max {out['max']:.0f} ms; missed {out['missed']}")
    bench.results["post_call"] = out


def scenario_probes(bench: Bench) -> None:
    """In-process costs of the answer's steps and of parsing a file; event-loop time per git spawn."""
    path, _ = bench.vault(bench.config.small)
    log("probes: per-call costs and process-spawn cost (diagnostics)")
    costs = probes.run_probe(["costs", str(path)], servers.service_env(path, 0), ROOT)
    startup = bench.results.get("startup", {})
    spawn = []
    for size in (bench.config.small, bench.config.large):
        measured = startup.get(str(size), {}).get("rss_kb")
        rss_kb = measured or (85_000 if size == bench.config.small else 400_000)
        result = probes.run_probe(["spawn", str(rss_kb // 1024)], None, ROOT)
        spawn.append(result | {"callers": size, "rss_measured": bool(measured)})
    log(f"  costs {costs}")
    log(f"  spawn {spawn}")
    bench.results["probes"] = {"costs": costs, "spawn": spawn}


def scenario_recall(bench: Bench) -> None:
    """The recall tool's cost per query, over a big index built in a fresh interpreter."""
    cfg = bench.config
    log(f"recall: {cfg.recall_callers} callers x {cfg.recall_calls} calls, {cfg.recall_queries} queries")
    result = recall.run(cfg.recall_callers, cfg.recall_calls, cfg.recall_queries, ROOT)
    log(f"  {result}")
    bench.results["recall"] = result


RUNNERS: dict[str, Callable[[Bench], None]] = {
    # The load runs first, on a quiet machine: start-up reads the 100,000-caller vault and writes its
    # derived cache, and the kernel's writeback and page-cache work after it would share the CPUs.
    "throughput": scenario_throughput,
    "latency": scenario_latency,
    "startup": scenario_startup,
    "hand-edit": scenario_hand_edit,
    "writes": scenario_writes,
    "post-call": scenario_post_call,
    "post-call-inbox": inbox.scenario_inbox,
    "latency-busy": scenario_latency_busy,  # it restarts the service with a 1 s reconcile
    "sync-visibility": sync.scenario_visibility,
    "sync-busy": sync.scenario_busy,
    "tenants": tenants.scenario_tenants,
    "recall": scenario_recall,
    "probes": scenario_probes,
}


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the scenarios, write the report."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (a smoke test)")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)")
    parser.add_argument("--out", type=Path, help="where to write the report (default: BENCHMARKS.md for a full run)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch vault under bench-out/run/")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="run the servers and load generators at this niceness (e.g. -5, needs root) to shield them from "
        "other work on the machine; default 0 (no change)",
    )
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="only rewrite the report from the last run's bench-out/results.json (after editing report.py)",
    )
    args = parser.parse_args(argv)
    if args.rerender:
        saved = json.loads((OUT / "results.json").read_text())
        meta = saved["meta"]
        out_path = args.out or (OUT / "BENCHMARKS-partial.md" if meta["partial"] else ROOT / "BENCHMARKS.md")
        out_path.write_text(report.render(meta, saved["results"]), encoding="utf-8")
        log(f"rewrote {out_path} from {OUT / 'results.json'} ({meta['command']}, {meta['date']})")
        return 0
    config = QUICK if args.quick else Config()
    partial = args.quick or bool(args.only)
    out_path = args.out or (OUT / "BENCHMARKS-partial.md" if partial else ROOT / "BENCHMARKS.md")
    command = os.environ.get("BENCH_COMMAND") or "python -m benchmarks.run " + " ".join(argv or sys.argv[1:])
    selected = [name for name in RUNNERS if not args.only or name in args.only]

    OUT.mkdir(exist_ok=True)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every process started from here
    started_at = dt.datetime.now(dt.UTC)
    project_revision = revision()
    load_before = machine.load_average()
    bench = Bench(config, args.keep)
    loads: dict[str, str] = {}
    started = time.monotonic()
    try:
        for name in selected:
            loads[name] = machine.load_average()
            RUNNERS[name](bench)
    finally:
        bench.close()
    elapsed = time.monotonic() - started
    meta = {
        "command": command.strip(),
        "date": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "revision": project_revision,
        "elapsed_s": elapsed,
        "machine": machine.describe() | {"wrk": loadgen.wrk_version(bench.wrk)},
        "load_before": load_before,
        "load_after": machine.load_average(),
        "scenario_load": loads,
        "nice": args.nice,
        "config": dataclasses.asdict(config),
        "quick": args.quick,
        "partial": partial,
        "scenarios": selected,
    }
    results = {k: v for k, v in bench.results.items() if k != "baseline_body"}
    (OUT / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    out_path.write_text(report.render(meta, results), encoding="utf-8")
    log(f"wrote {out_path} (raw numbers in {OUT / 'results.json'}); {elapsed:.0f} s in all")
    return 0


if __name__ == "__main__":
    # Run as `benchmarks.run`, the module benchmarks.sync imports, so that there is one copy of it (one clock for log).
    from benchmarks.run import main as run_main

    sys.exit(run_main())
