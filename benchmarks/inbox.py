"""The post-call inbox's figures (SPEC §10, §13): webhook → durably held and answered, and none lost across SIGKILL.

`post-call-inbox` (`--only post-call-inbox`): signed transcription events from 4 keep-alive
connections at once, each request timed from its first byte sent to its answer (held: fsynced in
the vault's `.git/` before the 200); then an event storm from 16 connections, the service SIGKILLed
after a set number of 200s, restarted, and every acknowledged event looked for in the caller files:
each must be there exactly once.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import signal
import time
from typing import Any

from benchmarks import generate, servers
from benchmarks.httpclient import Connection, HttpError

LATENCY_EVENTS = 1_000
LATENCY_CONNECTIONS = 4
STORM_CONNECTIONS = 16
KILL_AFTER = 600
_ID = re.compile(r"\((conv_inbox[0-9a-z_]+)\)$", re.MULTILINE)


def _event(caller: generate.GeneratedCaller, conversation_id: str) -> tuple[bytes, dict[str, str]]:
    from benchmarks.run import post_call_body, sign

    body = post_call_body(caller, conversation_id, f"Inbox bench {conversation_id}.")
    return body, {"ElevenLabs-Signature": sign(body, servers.ELEVENLABS_SECRET), "Content-Type": "application/json"}


async def _timed(svc: servers.Server, callers: list[generate.GeneratedCaller], run: str) -> dict[str, Any]:
    rng = random.Random(43)
    per = LATENCY_EVENTS // LATENCY_CONNECTIONS
    latencies: list[float] = []
    failures = 0

    async def sender(c: int) -> None:
        nonlocal failures
        conn = Connection(servers.HOST, svc.port)
        for n in range(per):
            body, headers = _event(rng.choice(callers), f"conv_inbox{run}_{c}_{n}")
            started = time.perf_counter()
            status, _ = await conn.request("POST", "/webhook/post-call", body, headers)
            latencies.append((time.perf_counter() - started) * 1000)
            failures += status != 200
        await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender(c) for c in range(LATENCY_CONNECTIONS)))
    return {"ack_ms": latencies, "failures": failures, "elapsed_s": time.perf_counter() - started}


async def _storm(svc: servers.Server, callers: list[generate.GeneratedCaller], run: str) -> set[str]:
    rng = random.Random(44)
    acknowledged: set[str] = set()

    async def sender(c: int) -> None:
        conn = Connection(servers.HOST, svc.port)
        for n in range(100_000):
            conversation = f"conv_inbox{run}_s{c}_{n}"
            body, headers = _event(rng.choice(callers), conversation)
            try:
                status, _ = await conn.request("POST", "/webhook/post-call", body, headers)
            except (HttpError, OSError):
                return  # the service is gone
            if status == 200:
                acknowledged.add(conversation)
            if len(acknowledged) >= KILL_AFTER and svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGKILL)
        await conn.close()

    await asyncio.gather(*(sender(c) for c in range(STORM_CONNECTIONS)))
    return acknowledged


def _wait_drained(svc: servers.Server, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        health = svc.health()
        if health.get("inbox_held") == 0 and health.get("pending_writes") == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError("the inbox did not drain")


def scenario_inbox(bench: Any) -> None:
    """Held-and-answered latency, then SIGKILL during a storm: every acknowledged event applied once."""
    from benchmarks.run import _pct, log

    path, callers = bench.work_vault()
    run = secrets.token_hex(3)
    svc = bench.service()
    svc.wait_quiet()
    log(f"post-call-inbox: {LATENCY_EVENTS} events from {LATENCY_CONNECTIONS} connections")
    out = asyncio.run(_timed(svc, callers, run))
    out["drain_s"] = _wait_drained(svc)
    acks = out["ack_ms"]
    out |= {"p50": _pct(acks, 50), "p99": _pct(acks, 99), "max": max(acks)}
    log(f"  held and answered: p50 {out['p50']:.2f} ms, p99 {out['p99']:.2f} ms, max {out['max']:.1f} ms")

    log(f"  storm from {STORM_CONNECTIONS} connections, SIGKILL after {KILL_AFTER} answers")
    acknowledged = asyncio.run(_storm(svc, callers, run))
    svc.proc.wait(timeout=30)
    restarted_at = time.monotonic()
    svc = bench.service()  # the process is gone: started again on the same vault
    recovered = _wait_drained(svc) + (time.monotonic() - restarted_at)
    found: list[str] = []
    for caller_file in (path / "callers").rglob("*.md"):
        found += [m for m in _ID.findall(caller_file.read_text(encoding="utf-8")) if f"conv_inbox{run}_s" in m]
    lost = acknowledged - set(found)
    out |= {
        "storm_acknowledged": len(acknowledged),
        "storm_lost": len(lost),
        "storm_applied_twice": len(found) - len(set(found)),
        "storm_recovered_s": recovered,
    }
    log(
        f"  {len(acknowledged)} acknowledged before the kill; after the restart {len(lost)} lost, "
        f"{out['storm_applied_twice']} applied twice, drained {recovered:.1f} s after the restart"
    )
    bench.results["post_call_inbox"] = out
