"""Small in-process measurements that explain the big numbers (not SPEC §10 rows themselves).

- `costs`: microseconds per call of the steps of a personalize answer, of parsing one file and of
  the watcher's look at a file that has not changed (as after the service's own write), timed on a
  real generated vault with the service's own functions; and the pause of a full garbage
  collection with that vault's index loaded.
- `spawn`: how long starting one child process blocks the event loop under uvloop (fork) and under
  asyncio's default loop (vfork), in a process as big as the service. Every commit starts git.

Each probe runs in a fresh subprocess (`python -m benchmarks.probes costs VAULT` or
`... spawn MB`) and prints JSON, so the orchestrator's own memory and imports do not colour them.
Internal APIs of the service are used here; a probe that no longer fits them reports an error
instead of failing the benchmark.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _per_call_us(fn: Callable[[int], object], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - started) / n * 1e6


def costs(vault_root: Path, env: dict[str, str]) -> dict[str, float]:
    """Per-call costs (µs) of the answer's steps and of parsing one caller file."""
    import random

    from server import answers, elevenlabs, parse
    from server.config import load_settings
    from server.service import open_service

    service = open_service(load_settings(env, env_file=None))
    memory = service.memory
    callers = [p for p in (vault_root / "callers").iterdir() if p.suffix == ".md"]
    texts = [p.read_text(encoding="utf-8") for p in random.Random(1).sample(callers, 500)]
    records = [parse.parse_caller(t) for t in texts]
    keys = [r.phone_hash for r in records]
    now = dt.datetime.now(dt.UTC)
    body = b'{"caller_id":"+14155550123","agent_id":"a","called_number":"+14155550199","call_sid":"CA1"}'
    data = elevenlabs.parse_personalize(body)
    identified = [memory.identities.identify(data.caller_id, data.called_number)]
    relpaths = [p for p in list(memory.index.files) if p.startswith("callers/")][:500]
    watcher = getattr(service, "watcher", None)
    refresh = (
        _per_call_us(lambda i: watcher.refresh(relpaths[i % len(relpaths)]), 2_000)
        if watcher is not None and hasattr(watcher, "refresh") and relpaths
        else float("nan")
    )
    import gc

    pauses = []
    for _ in range(3):
        started = time.perf_counter()
        gc.collect()
        pauses.append((time.perf_counter() - started) * 1000)
    return {
        "full_gc_ms": min(pauses),
        "gc_tracked_objects": float(len(gc.get_objects())),
        "watcher_refresh_unchanged_us": refresh,
        "decode_request_us": _per_call_us(lambda i: elevenlabs.parse_personalize(body), 20_000),
        "identify_caller_us": _per_call_us(
            lambda i: memory.identities.identify(data.caller_id, data.called_number), 20_000
        ),
        "lookup_us": _per_call_us(lambda i: memory.index.caller(keys[i % 500]), 20_000),
        "compose_and_encode_us": _per_call_us(
            lambda i: answers.answer_bytes(memory.index, service.settings, records[i % 500], now), 5_000
        ),
        "parse_caller_file_us": _per_call_us(lambda i: parse.parse_caller(texts[i % 500]), 3_000),
        "identified": float(identified[0].key is not None),
    }


def spawn(ballast_mb: int) -> dict[str, float]:
    """Event-loop time blocked per child process started, with `ballast_mb` of touched memory."""
    import uvloop

    ballast = [bytearray(4096) for _ in range(ballast_mb * 256)]
    for page in ballast:
        page[0] = 1

    async def blocked(n: int = 25) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec("true")
            times.append((time.perf_counter() - started) * 1000)
            await proc.wait()
        times.sort()
        return times[len(times) // 2]

    return {
        "ballast_mb": ballast_mb,
        "uvloop_ms": uvloop.run(blocked()),
        "asyncio_ms": asyncio.run(blocked()),
    }


def run_probe(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Run one probe in a fresh interpreter; its JSON, or {"error": ...}."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.probes", *args], capture_output=True, text=True, env=env, cwd=cwd
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    """`costs VAULT` (settings from the environment) or `spawn MB`."""
    import os

    if argv[:1] == ["costs"]:
        result: dict[str, Any] = costs(Path(argv[1]), dict(os.environ))
    elif argv[:1] == ["spawn"]:
        result = spawn(int(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
