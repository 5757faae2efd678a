"""BENCHMARKS.md from the results of one run: the SPEC §10 table first, then the details."""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks import syncreport
from server.recorder import RECORD_BATCH, RECORD_INTERVAL

MB = 1_000_000


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _verdict(ok: bool | None) -> str:
    return "not run" if ok is None else ("**pass**" if ok else "**FAIL**")


def _rows(meta: dict[str, Any], r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    cfg = meta["config"]
    small, large = cfg["small"], cfg["large"]
    rows: list[tuple[str, str, str, bool | None]] = []

    tp = r.get("throughput")
    rows.append(
        (
            f"personalize throughput, one worker, {small:,} callers",
            "≥ 0.9x a bare Litestar handler returning the same bytes, same server flags",
            f"**{tp['ratio']:.2f}x** ({tp['service_rps']:,.0f} vs {tp['baseline_rps']:,.0f} req/s, "
            f"medians of {len(tp['service'])} alternating runs each)"
            if tp
            else "not run",
            tp["ratio"] >= 0.9 if tp else None,
        )
    )
    for key, label in (("latency", ""), ("latency_busy", " while API writes, hand edits and reconcile run")):
        lat = r.get(key)
        if lat:
            q = server_side(lat["service"])
            runs = lat["service"].get("runs")
            measured = (
                f"p50 {q['p50']:.2f} / p90 {q['p90']:.2f} / **p99 {q['p99']:.2f} ms** server-side; from the "
                f"scheduled send, client-side: p99 {lat['service']['latency_ms']['p99']:.2f} ms"
                + (f" (medians of {_runs(runs)})" if runs else "")
            )
        rows.append(
            (
                f"personalize latency at {cfg['rate']:g} req/s, {small:,} callers{label}",
                "p99 ≤ 2 ms server-side",
                measured if lat else "not run",
                server_side(lat["service"])["p99"] <= 2.0 if lat else None,
            )
        )
    st = r.get("startup")
    for size, limit in ((small, 1.5), (large, 5.0)):
        s = st.get(str(size)) if st else None
        if s:
            cached = "restart with the derived cache" if s["has_derived_cache"] else "restart"
            measured = (
                f"**{s['ready_s']:.2f} s** ({cached}, median of {len(s['restarts'])}); "
                f"first start, every file parsed: {s['first']['ready_s']:.2f} s"
            )
        rows.append(
            (
                f"ready after start, {size:,} callers",
                f"≤ {limit:g} s",
                measured if s else "not run",
                s["ready_s"] <= limit if s else None,
            )
        )
    s = st.get(str(large)) if st else None
    worker_kb = worker_rss_kb(r)
    total_kb = s["rss_kb"] + worker_kb if s else 0
    rows.append(
        (
            f"memory (RSS) with {large:,} callers",
            "≤ 400 MB",
            (
                f"**{total_kb * 1024 / MB:.0f} MB**: the server {s['rss_kb'] * 1024 / MB:.0f} MB (peak "
                f"{s['peak_rss_kb'] * 1024 / MB:.0f} MB) + its worker process {worker_kb * 1024 / MB:.0f} MB"
            )
            if s
            else "not run",
            total_kb * 1024 <= 400 * MB if s else None,
        )
    )
    he = r.get("hand_edit")
    rows.append(
        (
            "hand edit → next call sees it",
            "p95 ≤ 150 ms",
            f"p50 {he['p50']:.0f} / **p95 {he['p95']:.0f} ms** / max {he['max']:.0f} ms over "
            f"{len(he['latencies_ms'])} edits, {he['missed']} missed"
            if he
            else "not run",
            he["p95"] <= 150 and he["missed"] == 0 if he else None,
        )
    )
    w = r.get("writes")
    lost = (w["lost_in_git"] + w["lost_on_disk"]) if w else 0
    rows.append(
        (
            f"acknowledged, committed writes per second (API, {small:,}-caller vault)",
            "≥ 200/s, none lost",
            f"**{w['per_s']:,.0f}/s** ({w['acknowledged']:,} in {w['elapsed_s']:.1f} s, {w['commits']} commits); "
            f"lost: {w['lost_in_git']} in git, {w['lost_on_disk']} on disk"
            if w
            else "not run",
            w["per_s"] >= 200 and lost == 0 and not w["failures"] if w else None,
        )
    )
    pc = r.get("post_call")
    rows.append(
        (
            "post-call webhook → summary in the next call",
            "≤ 1 s",
            f"p50 {pc['p50']:.0f} / p95 {pc['p95']:.0f} / **max {pc['max']:.0f} ms** over "
            f"{len(pc['latencies_ms'])} calls, {pc['missed']} missed"
            if pc
            else "not run",
            pc["max"] <= 1000 and pc["missed"] == 0 and pc["failures"] == 0 if pc else None,
        )
    )
    ib = r.get("post_call_inbox")
    rows.append(
        (
            "post-call webhook → durably held and answered 200",
            "p99 ≤ 20 ms, 0 lost across SIGKILL",
            f"p50 {ib['p50']:.1f} / **p99 {ib['p99']:.1f} ms** over {len(ib['ack_ms']):,} events; "
            f"SIGKILL after {ib['storm_acknowledged']:,} answered: **{ib['storm_lost']} lost**, "
            f"{ib['storm_applied_twice']} applied twice"
            if ib
            else "not run",
            ib["p99"] <= 20 and ib["storm_lost"] == 0 and ib["storm_applied_twice"] == 0 and not ib["failures"]
            if ib
            else None,
        )
    )
    rc = r.get("recall")
    ok = rc is not None and "error" not in rc
    rows.append(
        (
            f"recall tool, {rc['callers']:,} callers with {rc['calls_each']} calls each" if ok else "recall tool",
            "p99 ≤ 5 ms (§16)",
            f"p50 {rc['p50_ms']:.2f} / **p99 {rc['p99_ms']:.2f} ms** / max {rc['max_ms']:.2f} ms over "
            f"{rc['queries']:,} queries, in-process (index lookup and ranking; HTTP not included)"
            if ok
            else (f"error: {rc['error']}" if rc else "not run"),
            rc["p99_ms"] <= 5.0 if ok else None,
        )
    )
    tn = r.get("tenants")
    if tn:
        total_kb = tn["rss_kb"] + tn["worker_rss_kb"]
        rows.append(
            (
                f"{tn['tenants']} tenants × {tn['callers_each']:,} callers in one process",
                "ready ≤ 3 s from the derived caches; RSS ≤ 300 MB; personalize p99 unchanged (§12)",
                f"ready **{tn['ready_s']:.2f} s** (restarts, median of {len(tn['restarts'])}; first start, every file "
                f"parsed: {tn['first_ready_s']:.2f} s); RSS **{total_kb * 1024 / MB:.0f} MB** (the server "
                f"{tn['rss_kb'] * 1024 / MB:.0f} MB + its worker {tn['worker_rss_kb'] * 1024 / MB:.0f} MB); "
                f"personalize at 500 req/s spread over the tenants: **p99 {tn['server_side_p99_ms']:.2f} ms** "
                f"server-side (median of {len(tn['latency'])} runs)",
                tn["ready_s"] <= 3 and total_kb * 1024 <= 300 * MB and tn["server_side_p99_ms"] <= 2,
            )
        )
    return rows + syncreport.rows(meta, r)


def _throughput(r: dict[str, Any]) -> list[str]:
    tp = r.get("throughput")
    if not tp:
        return []
    sizes = tp.get("answer_sizes") or {}
    out = [
        "## Throughput: the service next to the baseline",
        "",
        f"{tp['tool']}, one thread, {tp['connections']} connections, {tp['seconds']:g} s per run, runs in the order "
        f"{' / '.join('A' if n == 'memory-bridge' else 'B' for n in tp['order'])} (A = memory-bridge, B = baseline) "
        "after a warm-up of each. Bodies: personalize requests for 2,000 random callers of the vault. The baseline "
        f"answers the median-sized real answer ({sizes.get('median', '?')} bytes; the service's answers ranged "
        f"{sizes.get('min', '?')}–{sizes.get('max', '?')} bytes). *Drain*: how long the service still worked on "
        "the write-back of calls (call_count, last_call, committed) after the load stopped. *CPU/request*: the "
        "CPU time of the server and its children (the worker process and the git commands it ran) over the run "
        "and its drain, per request; *worker + git*: the children's part.",
        "",
        "| server | req/s | p50 ms | p99 ms | errors | drain s | CPU µs/request | worker + git µs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in (("memory-bridge", tp["service"]), ("baseline", tp["baseline"])):
        for run in runs:
            out.append(
                f"| {name} | {run['requests_per_s']:,.0f} | {_f(run['latency_p50_ms'])} | {_f(run['latency_p99_ms'])} "
                f"| {run['errors']} | {run['drain_s']:.2f} | {run['cpu_us_per_request']:,.0f} "
                f"| {run.get('git_cpu_us_per_request', 0):,.0f} |"
            )
    wh = tp.get("withheld")
    if wh:
        out.append(
            f"| *diagnostic*: memory-bridge, withheld caller (no write-back) | {wh['requests_per_s']:,.0f} "
            f"| {_f(wh['latency_p50_ms'])} | {_f(wh['latency_p99_ms'])} | {wh['errors']} | | "
            f"{wh['cpu_us_per_request']:,.0f} | |"
        )
    out += ["", f"Ratio of medians: **{tp['ratio']:.3f}x**.", ""]
    return out


def server_side(result: dict[str, Any]) -> dict[str, float]:
    """A fixed-rate result's server-side percentiles (kernel receive timestamps); client-side if it has none."""
    return result.get("server_side_ms") or result["latency_ms"]  # type: ignore[no-any-return]


def _latency(meta: dict[str, Any], r: dict[str, Any]) -> list[str]:
    lat, busy = r.get("latency"), r.get("latency_busy")
    if not lat and not busy:
        return []
    cfg = meta["config"]
    entries: list[tuple[str, dict[str, Any]]] = []
    if lat:
        entries.append((f"**memory-bridge, median of {_runs(lat['service']['runs'])}**", lat["service"]))
        entries.append((f"**baseline, median of {_runs(lat['baseline']['runs'])}**", lat["baseline"]))
        entries += [(f"memory-bridge, run {n}", run) for n, run in enumerate(lat.get("service_runs", []), 1)]
        entries += [(f"baseline, run {n}", run) for n, run in enumerate(lat.get("baseline_runs", []), 1)]
        if lat.get("withheld"):
            entries.append(("*diagnostic*: memory-bridge, withheld caller (no write-back)", lat["withheld"]))
    if busy:
        entries.append(("memory-bridge, busy (see below)", busy["service"]))
    out = [
        f"## Latency at {cfg['rate']:g} req/s",
        "",
        f"Open-loop fixed-rate client (`benchmarks/fixedrate.py`), 32 keep-alive connections, "
        f"{cfg['latency_seconds']:g} s measured after {cfg['warmup_seconds']:g} s of warm-up per run; the service "
        "and the baseline alternate (A/B/B/A) and the table's first rows are the medians of the runs' "
        "percentiles. *Server-side* (SPEC §10's measure) runs from the request's actual send to the moment the "
        "kernel received the answer's last segment on the client's socket (a software receive timestamp, "
        "SO_TIMESTAMPNS): on loopback, the time the request spent in the server, its queue included, without "
        "how late the client process itself woke up to read the answer. The client-side columns run from each "
        "request's *scheduled* send time to the moment the client had read the answer, so stalls are charged to "
        "every request queued behind them and the client's own scheduling is in them too ('from send' starts "
        "at the actual send); the baseline shows the floor of this setup. *Client late*: the most any request "
        "left after its scheduled time (a backlog when every connection is busy also shows here).",
        "",
        "| server | server-side p50 ms | server-side p99 ms | server-side max ms | client-side p50 ms | p90 ms "
        "| p99 ms | p99.9 ms | max ms | p99 from send ms | client late max ms | rate | statuses |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, res in entries:
        q, s, k = res["latency_ms"], res["service_ms"], server_side(res)
        statuses = ", ".join(f"{code}: {n}" for code, n in res["statuses"].items())
        out.append(
            f"| {name} | {k['p50']:.2f} | **{k['p99']:.2f}** | {k['max']:.1f} | {q['p50']:.2f} | {q['p90']:.2f} "
            f"| {q['p99']:.2f} | {q['p99.9']:.2f} | {q['max']:.1f} | {s['p99']:.2f} "
            f"| {res['max_send_lateness_ms']:.1f} | {res['achieved_rate']:.0f}/s | {statuses} |"
        )
    if busy:
        bg = busy["background"]
        failures = ", ".join(f"{k}: {v}" for k, v in bg.get("failures", {}).items()) or "none"
        out += [
            "",
            f"Busy run ({cfg.get('busy_seconds', cfg['latency_seconds']):g} s after warm-up, service restarted with "
            f"`RECONCILE_SECONDS=1`): meanwhile {bg['writes_ok']} API writes acknowledged ({bg['writes_failed']} "
            f"failed: {failures}) and {bg['hand_edits']} hand edits of caller files (in place and by rename).",
        ]
    return [*out, ""]


def _startup(meta: dict[str, Any], r: dict[str, Any]) -> list[str]:
    st = r.get("startup")
    if not st:
        return []
    out = [
        "## Start-up and memory",
        "",
        "From spawning `python -m server.cli serve` to the first `GET /health` 200 (polled every 5 ms), on a clean "
        "vault in the page cache. The first start has no derived index cache (deleted beforehand, so every file is "
        "parsed); the restarts find the cache the previous stop left, as a restart in service does. *Indexing* "
        "is the service's own `ready_seconds` (open the vault, git status, read or parse every file, start the "
        "watcher and git writer); importing the service's modules alone takes "
        f"{st['import_seconds']:.2f} s. "
        "RSS is VmRSS from /proc/<pid>/status half a second after ready (the largest of all starts); peak is "
        "VmHWM. The worker process (git and the files of recorded calls) holds no index, so its RSS does not grow "
        "with the vault: the table shows it at start-up; after it had recorded calls in the throughput runs it held "
        f"{worker_rss_kb(r) * 1024 / MB:.0f} MB. The §10 memory row counts the server and the worker together.",
        "",
        "| callers | first start s (no cache) | restarts s | indexing s (first; restarts) | RSS MB | peak RSS MB "
        "| worker RSS MB |",
        "|---:|---:|---|---|---:|---:|---:|",
    ]
    for size in (meta["config"]["small"], meta["config"]["large"]):
        s = st.get(str(size))
        if not s:
            continue
        first, restarts = s["first"], s["restarts"]
        each = ", ".join(f"{run['ready_s']:.2f}" for run in restarts)
        indexing = f"{first['service_ready_s']:.2f}; " + ", ".join(f"{run['service_ready_s']:.2f}" for run in restarts)
        out.append(
            f"| {size:,} | {first['ready_s']:.2f} | {each} | {indexing} | {s['rss_kb'] * 1024 / MB:.0f} "
            f"| {s['peak_rss_kb'] * 1024 / MB:.0f} | {s.get('worker_rss_kb', 0) * 1024 / MB:.0f} |"
        )
    return [*out, ""]


def worker_rss_kb(r: dict[str, Any]) -> int:
    """The largest RSS seen of the worker process: after start-up, and after it recorded calls."""
    st = r.get("startup") or {}
    seen = [v.get("worker_rss_kb", 0) for v in st.values() if isinstance(v, dict)]
    seen.append((r.get("throughput") or {}).get("worker_rss_kb", 0))
    return max(seen)


def _others(meta: dict[str, Any], r: dict[str, Any]) -> list[str]:
    out = []
    he = r.get("hand_edit")
    if he:
        out += [
            "## Hand edit → next call",
            "",
            f"{len(he['latencies_ms'])} edits of random callers' files (a new `## Facts` line with a unique token; "
            "half written in place, half saved by rename as many editors do), each followed by personalize calls "
            "every 2 ms until the answer contains the token. "
            f"p50 {he['p50']:.1f} ms, p95 {he['p95']:.1f} ms, max {he['max']:.1f} ms; {he['missed']} never seen "
            "within 10 s.",
            "",
        ]
        pv = he.get("preview")
        if pv:
            out += [
                f"*Diagnostic*: {len(pv['latencies_ms'])} more edits, watched through "
                "`GET /api/callers/{hash}/preview` "
                "(exactly the personalize answer, but no call is recorded, so the probe itself makes no commits): "
                f"p50 {pv['p50']:.1f} ms, p95 {pv['p95']:.1f} ms, max {pv['max']:.1f} ms.",
                "",
            ]
    w = r.get("writes")
    if w:
        out += [
            "## Acknowledged, committed writes",
            "",
            f"{meta['config']['writers']} concurrent keep-alive clients POSTing `/api/memory/{{hash}}` facts for "
            f"random callers for {w['elapsed_s']:.1f} s: {w['acknowledged']:,} answered 200 ({w['per_s']:,.0f}/s) into "
            f"{w['files']:,} files and {w['commits']} commits; ack latency p50 {w['ack_p50_ms']:.0f} ms, "
            f"p99 {w['ack_p99_ms']:.0f} ms; other answers: {w['failures'] or 'none'}. While the service was still "
            "running, every acknowledged fact was looked up in its file and in the file at git's HEAD: "
            f"{w['lost_in_git']} missing from git, {w['lost_on_disk']} missing on disk.",
            "",
        ]
    pc = r.get("post_call")
    if pc:
        out += [
            "## Post-call webhook → summary in the next call",
            "",
            f"{len(pc['latencies_ms'])} signed `post_call_transcription` events (the fixture, with a new "
            "conversation id, caller and summary each), each followed by personalize calls every 2 ms until the "
            f"answer carries the summary. The webhook itself answered in {pc['ack_p50']:.0f} ms (p50; it commits "
            f"before answering). Send → seen: p50 {pc['p50']:.0f} ms, p95 {pc['p95']:.0f} ms, max {pc['max']:.0f} ms.",
            "",
        ]
    return out


def _probes(meta: dict[str, Any], r: dict[str, Any]) -> list[str]:
    pr = r.get("probes")
    if not pr:
        return []
    out = ["## Probes (diagnostics)", ""]
    costs = pr.get("costs", {})
    if "error" in costs:
        out.append(f"Per-call costs: probe failed ({costs['error']}).")
    elif costs:
        out.append(
            "Per call, in one process with the service's own functions on the generated vault: decode the request "
            f"{costs['decode_request_us']:.1f} µs, identify the caller (normalise + HMAC) "
            f"{costs['identify_caller_us']:.1f} µs, index lookup {costs['lookup_us']:.2f} µs, compose + encode the "
            f"answer {costs['compose_and_encode_us']:.1f} µs; parsing one caller file (YAML frontmatter + sections) "
            f"{costs['parse_caller_file_us']:.0f} µs; the watcher's refresh of a caller file that has not changed "
            f"(as after the service's own write) {costs.get('watcher_refresh_unchanged_us', float('nan')):.0f} µs. "
            f"A full garbage collection with the {meta['config']['small']:,}-caller index loaded "
            f"({costs.get('gc_tracked_objects', float('nan')):,.0f} tracked objects) pauses "
            f"{costs.get('full_gc_ms', float('nan')):.1f} ms."
        )
    for sp in pr.get("spawn", []):
        if "error" in sp:
            out.append(f"Spawn probe failed ({sp['error']}).")
            continue
        out.append(
            f"Starting one child process (as each git command does) in a process of {sp['ballast_mb']} MB ("
            + ("the service's RSS" if sp.get("rss_measured") else "about the service's RSS")
            + f" at {sp['callers']:,} callers) blocks the event loop for {sp['uvloop_ms']:.2f} ms under "
            f"uvloop (fork) and {sp['asyncio_ms']:.2f} ms under asyncio's default loop (vfork)."
        )
    return [*out[:2], *(f"- {line}" for line in out[2:]), ""]


def _spawn(r: dict[str, Any], callers: int) -> dict[str, Any] | None:
    for sp in (r.get("probes") or {}).get("spawn", []):
        if sp.get("callers") == callers and "error" not in sp:
            return sp  # type: ignore[no-any-return]
    return None


def notes(meta: dict[str, Any], r: dict[str, Any]) -> list[str]:
    """What bounds each missed (or nearly missed) target, from this run's own diagnostics, and what would lift it."""
    cfg = meta["config"]
    out: list[str] = []
    costs = (r.get("probes") or {}).get("costs") or {}
    spawn = _spawn(r, cfg["small"])
    fork = (
        f"starting one git process blocks the event loop for {spawn['uvloop_ms']:.1f} ms under uvloop (it forks the "
        f"whole service) against {spawn['asyncio_ms']:.1f} ms with vfork (probes)"
        if spawn
        else "every git process is started by forking the whole service"
    )
    tp = r.get("throughput")
    if tp and tp["ratio"] < 1.0:
        runs = tp["service"]
        cpu = statistics.mean(x["cpu_us_per_request"] for x in runs)
        child = statistics.mean(x.get("git_cpu_us_per_request", 0) for x in runs)
        base = statistics.mean(x["cpu_us_per_request"] for x in tp["baseline"])
        drain = statistics.mean(x["drain_s"] for x in runs)
        text = (
            f"- **Throughput ({tp['ratio']:.2f}x"
            + (", close to the 0.9x limit" if tp["ratio"] < 0.95 else "")
            + f").** CPU per call: {cpu:,.0f} µs for the service (its worker process and git included, "
            f"{child:,.0f} µs of it) against {base:.0f} µs for the baseline; the recording of calls is in these "
            "figures, drain included."
        )
        wh = tp.get("withheld")
        if wh:
            text += (
                f" Answering alone (withheld callers: nothing to record) runs at "
                f"{wh['requests_per_s'] / tp['baseline_rps']:.2f}x the baseline: the bare ASGI route does less per "
                "request than a Litestar handler, so the answer path itself is not what bounds the ratio."
            )
        text += (
            " What bounds it is recording the calls while they flood in: the files' rewrites and git run in the "
            "worker process at the lowest priority, but on a 2-core machine that wrk and the server already fill, "
            "their CPU and the server's share of it (applying each new record, composing that caller's answer "
            "anew) come out of the answer rate. The recorder therefore writes at most "
            f"{RECORD_BATCH} callers every {RECORD_INTERVAL:g} s while calls keep coming, each caller's calls "
            f"coalesced meanwhile; the rest is recorded after the load (the drain column, {drain:.0f} s here). "
            "Nothing is lost: pending calls are shown on `/health` and recorded at shutdown. To lift it further: "
            "fewer files per recorded call is not possible (one caller, one file), so a cheaper commit (a sharded "
            "`callers/` tree, smaller trees per commit) or a third core."
        )
        out.append(text)
    for key, label in (("latency", "Latency at 500 req/s"), ("latency_busy", "Latency with background work")):
        lat = r.get(key)
        if not lat or server_side(lat["service"])["p99"] <= 1.5:
            continue
        p99 = server_side(lat["service"])["p99"]
        text = f"- **{label} (p99 {p99:.2f} ms" + (", close to the 2 ms limit" if p99 <= 2.0 else "") + ").**"
        wh, base = lat.get("withheld"), lat.get("baseline")
        if wh:
            text += f" Withheld callers (nothing to record) at the same rate: p99 {server_side(wh)['p99']:.2f} ms."
        if base:
            text += f" The baseline: p99 {server_side(base)['p99']:.2f} ms."
        if key == "latency_busy":
            bg = lat["background"]
            text += f" Meanwhile {bg['writes_ok']} API writes and {bg['hand_edits']} hand edits, reconcile every 1 s."
        text += (
            " The server's event loop only answers and applies results; the tail that remains is CPU: git "
            f"commits on a {cfg['small']:,}-entry `callers/` tree (about 25 ms of CPU each, in the worker at the "
            "lowest priority) and the load generator share 2 cores with the server, and a request that arrives "
            "while the server waits for a core waits with it. To lift it: fewer commits (writes arriving "
            "together already share one), a sharded `callers/` tree, more cores."
        )
        if base and server_side(base)["p99"] > 2.0:
            text += " The baseline's own p99 shows that this shared 2-core machine's floor is above 2 ms."
        out.append(text)
    st = r.get("startup")
    for size, limit in ((cfg["small"], 1.5), (cfg["large"], 5.0)):
        s = st.get(str(size)) if st else None
        if not s or s["first"]["ready_s"] <= limit:
            continue
        first = s["first"]
        parse = costs.get("parse_caller_file_us")
        text = (
            f"- **Start-up at {size:,} callers.** Restarts: {s['ready_s']:.2f} s; a first start, which parses every "
            f"file, {first['ready_s']:.1f} s ({first['service_ready_s']:.1f} s of it indexing"
            + (f"; parsing one caller file costs {parse:.0f} µs" if parse else "")
            + ")."
        )
        if s["ready_s"] > limit:
            text += (
                " Even with the derived cache the restart misses the target: the remaining per-file work in Python "
                "(listing the vault, a stat per file, decoding and applying the cache) dominates; profile "
                "`open_service`."
            )
        else:
            text += (
                " The derived cache makes restarts meet the target; a fresh clone or a change of the record types "
                "pays the full parse once."
            )
        out.append(text)
    large = st.get(str(cfg["large"])) if st else None
    total_kb = large["rss_kb"] + worker_rss_kb(r) if large else 0
    if large and total_kb * 1024 > 0.85 * 400 * MB:
        per_caller = (large["rss_kb"] - 60_000) * 1024 / cfg["large"] / 1000
        where = "over" if total_kb * 1024 > 400 * MB else "close to"
        out.append(
            f"- **Memory ({total_kb * 1024 / MB:.0f} MB with the worker process, {where} "
            f"the 400 MB limit; the server's peak {large['peak_rss_kb'] * 1024 / MB:.0f} MB while loading).** About "
            f"{per_caller:.1f} kB per caller beyond the interpreter's ~60 MB: the parsed records, each tens of small "
            "Python objects (strings, tuples, structs); dates, times and names are already shared between callers. "
            "A restart uses more than a first start: decoding the derived cache leaves freed objects scattered "
            "through memory the allocator cannot return. To lift it: keep each record as one msgpack `bytes` and "
            "decode it on lookup (a few µs)."
        )
    he = r.get("hand_edit")
    if he and (he["p95"] > 100 or he["missed"]):
        pv = he.get("preview")
        text = (
            f"- **Hand edit → next call (p95 {he['p95']:.0f} ms, "
            + ("over" if he["p95"] > 150 or he["missed"] else "close to")
            + " the 150 ms limit).**"
        )
        if pv:
            text += (
                f" Seen through the preview API, which records no call and so makes no commit, p95 is "
                f"{pv['p95']:.0f} ms: the watcher is fast while git is quiet, and slow while the calls' own "
                "write-backs commit. git's writes under `.git/` are filesystem events too; if the watcher watches "
                "the whole vault and filters `.git` only after watchfiles has batched, a batch closes only after "
                "`step` ms without any event or at `debounce`. To lift it: watch `callers/`, `notes/` and "
                "`soul.md` only, and/or a small debounce (about 50 ms)."
            )
        out.append(text)
    w = r.get("writes")
    if w and (w["per_s"] < 200 or w["lost_in_git"] or w["lost_on_disk"]):
        per_commit = w["acknowledged"] / max(1, w["commits"])
        cycle = w["elapsed_s"] / max(1, w["commits"]) * 1000
        out.append(
            f"- **Writes ({w['per_s']:.0f}/s).** {per_commit:.0f} writes per commit, one commit every {cycle:.0f} ms, "
            f"with {cfg['writers']} writers: the rate is commits per second times writes per commit. When "
            f"writes per commit is about half the writers, the batch closes before the writers just acknowledged "
            f"are back. Each commit runs several git processes on a {cfg['small']:,}-entry `callers/` tree "
            f"({fork}). To lift it: gather a few ms before each commit, one `git commit -- <paths>` instead of "
            "add + commit + rev-parse, vfork spawns, and sharding `callers/` (smaller trees to rewrite per commit, "
            "reference/libraries.md §5.2)."
        )
    return out + syncreport.notes(meta, r)


def render(meta: dict[str, Any], results: dict[str, Any]) -> str:
    """The whole report as markdown."""
    lines = ["# Benchmarks", ""]
    if meta["partial"]:
        lines += [
            "> **Partial run** (`--quick` or `--only`): smaller sizes or fewer scenarios; not the project's figures.",
            "",
        ]
    lines += [
        f"Produced by `{meta['command']}` on {meta['date']} in {meta['elapsed_s']:.0f} s, against SPEC §10, "
        f"for the service at revision {meta.get('revision', 'unknown')}. "
        "Load generator and servers share the machine below, so absolute numbers are pessimistic and noisy "
        f"(load average before the run: {meta['load_before']}, after: {meta['load_after']}); "
        "the ratios were taken side by side in the same run.",
        "",
        "| what | target | measured | result |",
        "|---|---|---|---|",
    ]
    for what, target, measured, ok in _rows(meta, results):
        lines.append(f"| {what} | {target} | {measured} | {_verdict(ok)} |")
    lines.append("")
    lines += _throughput(results)
    lines += _latency(meta, results)
    lines += _startup(meta, results)
    lines += _others(meta, results)
    lines += _probes(meta, results)
    lines += [
        "## Method",
        "",
        "- Vaults are generated by `benchmarks/generate.py` in the real file format (about 5% hand-formatted: "
        "comments, odd quoting, flow lists, unknown keys; 2% renamed after the caller), with daily notes and the "
        "starter `soul.md`, as one git commit; cached under `bench-out/vaults/` and reused while unchanged. "
        "Scenarios that write use a scratch copy.",
        "- The service runs as in production: `python -m server.cli --env-file /dev/null serve` (uvicorn, one "
        "worker, no access log, asyncio's loop + httptools), `LOG_LEVEL=WARNING`, with its worker process (git and "
        "the files of recorded calls) at niceness 19. The baseline (`benchmarks/baseline_app.py`) is started "
        "through the same `serve` code, so its flags are the same.",
        "- Every personalize call of a known caller also records the call (call_count, last_call, a commit) "
        "after the answer, as SPEC §6 requires; the throughput and latency runs include that work. *CPU/request* "
        "counts the server and its worker process (with the git commands it ran).",
        "- wrk has no fixed-rate mode and wrk2 is not packaged in Debian, so latency percentiles come from "
        "`benchmarks/fixedrate.py` (open loop, coordinated-omission-free).",
        f"- Niceness of the servers and load generators: {meta.get('nice', 0)}. Load average at the start of each "
        "scenario: " + ", ".join(f"{k} {v}" for k, v in meta.get("scenario_load", {}).items()) + ".",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in meta["machine"].items()]
    lines.append("")
    notes_lines = notes(meta, results)
    if notes_lines:
        lines += [
            "## Notes",
            "",
            "What bounds each missed or nearly missed target, what a first start without the derived cache costs, "
            "and what would lift them; how the sync rows are measured. The numbers are this run's; the explanations "
            "come from profiles of the service (cProfile in process; on the live server, an event-loop lag probe "
            "and perf sched) and should be "
            "re-checked when the code they name changes.",
            "",
            *notes_lines,
            "",
        ]
    return "\n".join(lines)
