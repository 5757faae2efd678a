"""The `tenants` scenario (SPEC §10, §12): 100 tenants of 1,000 callers each in one process.

Each tenant is a generated vault (its callers keyed under its HKDF-derived key) with a `tenant.md`
claiming one agent id and one number. The service is started once to build every tenant's derived
cache, then restarted to measure ready time and RSS (the worker process's too), then driven at a
fixed 500 req/s with personalize calls spread over every tenant, routed by agent id.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import generate, servers
from server.hkdf import tenant_key

if TYPE_CHECKING:
    from benchmarks.run import Bench

FULL = (100, 1_000)
QUICK = (10, 200)
ROOT = Path(__file__).resolve().parent.parent


def _name(n: int) -> str:
    return f"tenant{n:03d}"


def build(bench: Bench, tenants: int, callers: int) -> tuple[Path, dict[str, list[generate.GeneratedCaller]]]:
    """A fresh TENANTS_DIR of working copies of cached generated vaults, each with its tenant.md."""
    from benchmarks.run import _today, log

    root = bench.scratch / "tenants"
    if root.exists():
        shutil.rmtree(root)
    found: dict[str, list[generate.GeneratedCaller]] = {}
    for n in range(tenants):
        name = _name(n)
        key = tenant_key(servers.PHONE_HASH_KEY, name)
        params = generate.Params(callers, bench.config.seed + 1000 + n, key, _today())
        source, people = generate.cached_vault(bench.cache / "tenants", f"{name}-{callers}", params, lambda _m: None)
        generate.working_copy(source, root / name)
        claims = f'---\nagent_ids:\n  - agent_{name}\nnumbers:\n  - "+1628555{n:04d}"\n---\n# {name}\n'
        (root / name / "tenant.md").write_text(claims, encoding="utf-8")
        found[name] = people
    log(f"tenants: {tenants} vaults of {callers} callers in {root}")
    return root, found


def _bodies(bench: Bench, people: dict[str, list[generate.GeneratedCaller]], count: int = 4000) -> Path:
    rng = random.Random(bench.config.seed)
    names = sorted(people)
    lines = []
    for _ in range(count):
        name = rng.choice(names)
        caller = rng.choice(people[name])
        body = {"caller_id": caller.e164, "agent_id": f"agent_{name}", "called_number": "+16285550000"}
        body["call_sid"] = f"CA{rng.getrandbits(128):032x}"
        lines.append(json.dumps(body, separators=(",", ":")))
    path = bench.scratch / "tenants-bodies.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def scenario_tenants(bench: Bench) -> None:
    """Ready time and RSS from the derived caches, and personalize latency spread over the tenants."""
    from benchmarks.run import QUICK as QUICK_CONFIG
    from benchmarks.run import _collect, _fixed_rate, _latency_line, log

    count, size = QUICK if bench.config == QUICK_CONFIG else FULL
    root, people = build(bench, count, size)
    extra = {"TENANTS_DIR": str(root)}
    vault = bench.scratch / "tenants-unused-vault"
    log("tenants: first start (every file parsed, every cache written)")
    first = servers.start_service(vault, bench.logs / "tenants-first.log", ROOT, timeout=600, **extra)
    first_ready = first.ready_after
    first.stop()
    runs = []
    for n in range(bench.config.startup_repeats):
        server = servers.start_service(vault, bench.logs / "tenants-restart.log", ROOT, timeout=300, **extra)
        health = server.health()
        time.sleep(0.5)  # the writers and the watcher settle
        memory, worker = server.memory_kb(), server.children_rss_kb()
        runs.append({"ready_s": server.ready_after, "rss_kb": memory["VmRSS"], "worker_rss_kb": worker})
        log(
            f"  restart {n + 1}: ready after {server.ready_after:.2f} s, {health['tenants']} tenants, "
            f"{health['callers']} callers, RSS {memory['VmRSS'] / 1024:.0f} MiB (+ {worker / 1024:.0f} MiB worker)"
        )
        if n + 1 < bench.config.startup_repeats:
            server.stop()
    bodies = _bodies(bench, people)
    latency = []
    try:
        for n in range(bench.config.latency_rounds):
            server.wait_quiet()
            log(f"tenants: {bench.config.rate:g} req/s over {count} tenants, run {n + 1}")
            result = _collect(_fixed_rate(bench, server, bodies, bench.config.latency_seconds))
            _latency_line("tenants", result)
            latency.append(result)
        unclaimed = server.health()["unclaimed"]
    finally:
        server.stop()
    bench.results["tenants"] = {
        "tenants": count,
        "callers_each": size,
        "first_ready_s": first_ready,
        "ready_s": statistics.median(r["ready_s"] for r in runs),
        "rss_kb": max(r["rss_kb"] for r in runs),
        "worker_rss_kb": max(r["worker_rss_kb"] for r in runs),
        "restarts": runs,
        "latency": latency,
        "server_side_p99_ms": statistics.median((r.get("server_side_ms") or r["latency_ms"])["p99"] for r in latency),
        "unclaimed": unclaimed,
    }
