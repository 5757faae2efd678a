"""The `recall` scenario (SPEC §10 row of §16): what one `recall` tool call costs the server, 10k callers of 200 calls.

The index is built in a fresh interpreter (`python -m benchmarks.recall CALLERS CALLS QUERIES`): caller
records with facts and `## Calls` lines made from the generator's templates and read by the service's
own parser, each caller's calls drawn from a pool of distinct lines so that 2 million lines fit in
memory. Each query is timed as the route does its work after the body is decoded: the caller found in
the index by key, then ranked and bounded by `server.recall.recall`. HTTP and JSON decoding are left
out (the personalize rows measure those for the same server); the answer's size is checked.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

POOL = 20_000  # distinct call lines the callers' calls are drawn from
EXTRA_WORDS = ("teapot", "invoice", "refund", "appointment", "parcel", "friday", "dentist", "card", "x-ray")


def measure(callers: int, calls: int, queries: int, seed: int = 7) -> dict[str, Any]:
    """Per-query times (ms) of finding a caller and ranking their memory, over `queries` random queries."""
    from benchmarks import generate
    from server.parse import parse_call
    from server.recall import MAX_ANSWER_CHARS, recall
    from server.records import Caller

    rng = random.Random(seed)
    started = time.perf_counter()
    pool = []
    for n in range(POOL):
        day = f"20{24 + n % 3}-{1 + n % 12:02d}-{1 + n % 28:02d} {n % 24:02d}:{n % 60:02d}"
        summary = generate._fill(rng, rng.choice(generate.SUMMARIES))
        pool.append(parse_call(f"{day} · {summary} ({generate._conversation_id(rng)})"))
    index: dict[str, Caller] = {}
    for n in range(callers):
        key = f"{rng.getrandbits(256):064x}"
        facts = tuple(generate._fill(rng, rng.choice(generate.FACTS)) for _ in range(rng.randint(2, 8)))
        index[key] = Caller(
            phone_hash=key,
            name=f"{rng.choice(generate.FIRST)} {rng.choice(generate.LAST)}",
            call_count=calls,
            facts=facts,
            calls=tuple(rng.choice(pool) for _ in range(calls)),
            notes=(f"- 2026-11-0{1 + n % 9}: {generate._fill(rng, rng.choice(generate.FACTS))}",),
        )
    built = time.perf_counter() - started
    vocabulary = sorted({w for line in pool[:500] for w in line.summary.split() if w.isalpha()} | set(EXTRA_WORDS))
    keys = list(index)
    times: list[float] = []
    found = longest = 0
    for _ in range(queries):
        key = rng.choice(keys)
        query = " ".join(rng.sample(vocabulary, rng.randint(1, 4)))
        t0 = time.perf_counter()
        answer = recall(index.get(key), query)
        times.append((time.perf_counter() - t0) * 1e3)
        found += bool(answer)
        longest = max(longest, len("\n".join(answer)))
    if longest > MAX_ANSWER_CHARS:
        raise RuntimeError(f"an answer of {longest} characters")
    times.sort()
    return {
        "callers": callers,
        "calls_each": calls,
        "queries": queries,
        "built_s": built,
        "answered": found,
        "longest_answer": longest,
        "p50_ms": times[len(times) // 2],
        "p99_ms": times[int(len(times) * 0.99) - 1],
        "max_ms": times[-1],
        "mean_ms": statistics.fmean(times),
    }


def run(callers: int, calls: int, queries: int, cwd: Path) -> dict[str, Any]:
    """`measure` in a fresh interpreter; its result, or {"error": ...}."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.recall", str(callers), str(calls), str(queries)],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


if __name__ == "__main__":
    print(json.dumps(measure(*(int(arg) for arg in sys.argv[1:4]))))
