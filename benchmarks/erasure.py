"""How long an erasure takes on a vault with history: N callers, each with a few commits, one erased.

Builds the vault with the service's own write path (one commit per fact, as the API makes them),
then times `Eraser.erase` (the forget, the rewrite of every ref, the prune, the audit commit).

Run: `python -m benchmarks.erasure [CALLERS] [FACTS_PER_CALLER]` (defaults 1000 and 3).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from server.config import load_settings
from server.service import open_service


async def _run(folder: Path, callers: int, facts: int) -> None:
    env = {"VAULT_DIR": str(folder / "vault"), "PHONE_HASH_KEY": "benchmark-phone-hash-key-0123", "LOG_LEVEL": "ERROR"}
    service = open_service(load_settings(env, env_file=None))
    await service.start(watch=False)
    try:
        memory = service.memory
        numbers = [f"+1415555{n:04d}" for n in range(callers)]
        began = time.perf_counter()
        for round_ in range(facts):
            for number in numbers:
                target = memory.identities.write_target(number)
                assert target is not None
                await memory.add_fact(target.key, f"Fact {round_} of {number[-4:]}", "api", e164=target.e164)
        built = time.perf_counter() - began
        commits = (await memory.git.runner.run("rev-list", "--count", "HEAD"))[1].strip()
        key = memory.identities.resolve(numbers[callers // 2])
        assert key is not None
        began = time.perf_counter()
        erased = await service.eraser.erase(key, "cli", block=False)
        took = time.perf_counter() - began
        print(
            f"{callers} callers, {commits} commits (built in {built:.1f} s): erasure took {took:.2f} s, "
            f"{erased.commits_rewritten} commits rewritten"
        )
    finally:
        await service.stop()


def main() -> None:
    """Build a vault in a temporary folder and time one erasure."""
    callers = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    facts = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory(prefix="memory-bridge-erasure-") as folder:
        asyncio.run(_run(Path(folder), callers, facts))


if __name__ == "__main__":
    main()
