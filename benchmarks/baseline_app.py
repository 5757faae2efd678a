"""The throughput baseline of SPEC §10: a bare Litestar handler returning the same bytes.

`POST /webhook/personalize` answers a fixed body (a real personalize answer the benchmark took
from the service) with no auth, no parsing, no lookup and no write-back: the ceiling of Litestar
plus uvicorn on this machine. `GET /health` answers `{"status":"ok"}` for the readiness probe.

To be sure it runs under *the same server flags* as the service, it is started through the
service's own `serve` command with `server.app.create_asgi` swapped for this app, so whatever
uvicorn options `server/cli.py` passes (one worker, no access log, asyncio's loop, httptools,
...) the baseline gets too.

Run: `BENCH_BASELINE_BODY=answer.json PORT=8001 python -m benchmarks.baseline_app` (plus the env
the service's settings need; the vault is never opened).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from litestar import Litestar, Response, get, post

BODY_ENV = "BENCH_BASELINE_BODY"


def create_baseline_app(body: bytes) -> Litestar:
    """A Litestar app whose personalize route returns `body` as it is."""

    @post("/webhook/personalize", status_code=200)
    async def personalize() -> Response[bytes]:
        return Response(body, status_code=200, media_type="application/json")

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    return Litestar(route_handlers=[personalize, health], logging_config=None)


def main() -> int:
    """Serve the baseline through `memory-bridge serve`, so the uvicorn flags are the service's."""
    import server.app
    from server import cli

    body = Path(os.environ[BODY_ENV]).read_bytes()
    app = create_baseline_app(body)
    server.app.create_asgi = lambda settings: app  # type: ignore[assignment]
    return cli.main(["--env-file", os.devnull, "serve"])


if __name__ == "__main__":
    sys.exit(main())
