"""memory-bridge's own benchmark (SPEC §10): `scripts/bench` runs `python -m benchmarks.run`.

Modules:
- `generate`: synthetic vaults of realistic callers, cached between runs.
- `servers`: start the real service (its own `serve` command) and the bare Litestar baseline.
- `baseline_app`: the bare Litestar handler the throughput ratio is taken against.
- `httpclient`: a small keep-alive HTTP/1.1 client for the write, edit and webhook scenarios.
- `fixedrate`: an open-loop, fixed-rate load generator for latency percentiles.
- `loadgen`: full-speed load with `wrk` (installed from Debian when missing).
- `sync`: the sync scenarios (two replicas, a git remote on loopback); `githook`: that remote's push webhook.
- `probes`: small in-process measurements that explain the big numbers.
- `machine`: what the numbers were measured on.
- `report`: BENCHMARKS.md from the results.
- `syncreport`: the sync rows of the report and how they are measured.
- `run`: the scenarios and the command line.
"""
