"""What the PostgreSQL backend costs: the shared rate limiter's latency per request, and
the usage ledger's write throughput, each against the embedded default in the same run.

    python -m bench.usage_postgres [--rounds 5]

A throwaway PostgreSQL 15 on 127.0.0.1 (Debian's binaries, `fsync` on, as a production
server would run; tests/postgres_server.py) next to SQLite files on the same disk.
Rounds alternate the order of the contenders; numbers are medians over rounds with the
range. Three measurements:

1. limiter: what one completion request does to its key's limits (admit + reserve +
   settle) on `KeyRateLimiter` (in memory) and `SharedRateLimiter` (PostgreSQL, the
   database's clock), one caller at a time (latency per request) and 64 concurrent
   callers on 100 keys and on one hot key (throughput of one ingress replica).
2. api: a whole completion request through the ingress's HTTP surface without Ray
   (tests/api_harness.py: real FastAPI app, keys, limits, ledger; a fake engine
   answering at once), SQLite + in-memory limits vs PostgreSQL + shared limits, so the
   difference is what the backend adds to a request's latency.
3. ledger: `record` (the request path's share: one journal append) and `flush` (one
   batch of distinct rows committed with its journal's name) on both backends.

Writes bench/results/usage-postgres.json and a table in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.harness.runner import REPO, result_header, update_readme

RESULT = REPO / "bench" / "results" / "usage-postgres.json"
DSN_ENV = "LORAFLEET_BENCH_USAGE_DSN"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}


# ---- 1. the limiter ----------------------------------------------------------------------

def _principal(i: int):
    from deployments.tenancy.keys import Principal

    return Principal(f"bench-{i}", "acme", "tenant", requests_per_second=1e9, tokens_per_minute=10**12)


async def _one_request(limiter, principal) -> None:
    await limiter.admit(principal)
    held = await limiter.reserve(principal, 300)
    limiter.settle(held, 120)


async def _sequential_us(limiter, n: int) -> list[float]:
    keys = [_principal(i) for i in range(100)]
    latencies = []
    for i in range(n):
        started = time.perf_counter()
        await _one_request(limiter, keys[i % 100])
        latencies.append((time.perf_counter() - started) * 1e6)
    return latencies


async def _concurrent(limiter, callers: int, per_caller: int, hot_key: bool) -> dict:
    keys = [_principal(0 if hot_key else i) for i in range(100)]
    latencies: list[float] = []

    async def caller(c: int) -> None:
        for i in range(per_caller):
            started = time.perf_counter()
            await _one_request(limiter, keys[(c * per_caller + i) % 100])
            latencies.append((time.perf_counter() - started) * 1e6)

    started = time.perf_counter()
    await asyncio.gather(*[caller(c) for c in range(callers)])
    wall = time.perf_counter() - started
    return {"requests_per_s": callers * per_caller / wall, "p50_us": _pct(latencies, 0.5), "p99_us": _pct(latencies, 0.99)}


def _limiter(kind: str, dsn: str):
    from deployments.tenancy.ratelimit import KeyRateLimiter
    from deployments.tenancy.ratelimit_postgres import PostgresBuckets
    from deployments.tenancy.ratelimit_shared import SharedRateLimiter

    if kind == "memory":
        return KeyRateLimiter(shares=2)
    limiter = SharedRateLimiter(PostgresBuckets(dsn), fallback=KeyRateLimiter(shares=2))
    time.sleep(0.5)  # the pool's connections are warm, as on a running ingress
    return limiter


async def limiter_round(kind: str, dsn: str, n: int) -> dict:
    limiter = _limiter(kind, dsn)
    try:
        await _sequential_us(limiter, 200)  # warm-up (prepared statements, rows exist)
        seq = await _sequential_us(limiter, n)
        spread = await _concurrent(limiter, 64, 50, hot_key=False)
        hot = await _concurrent(limiter, 64, 50, hot_key=True)
        if kind == "shared":
            assert limiter.store_up, "the shared limiter fell back to memory during the benchmark"
            limiter.flush()
    finally:
        limiter.close()
    return {"sequential_p50_us": _pct(seq, 0.5), "sequential_p99_us": _pct(seq, 0.99),
            "sequential_mean_us": statistics.fmean(seq),
            "concurrent_100_keys": spread, "concurrent_hot_key": hot}


# ---- 2. through the API ------------------------------------------------------------------

def api_round(kind: str, dsn: str, n: int, work: Path) -> dict:
    from tests.api_harness import ApiHarness, FakeEngineClient

    assets = REPO / ".test-assets" / "demo"
    work.mkdir(parents=True)
    limits = {"requests_per_second": 1e9, "tokens_per_minute": 10**12}
    usage = {"backend": "postgres", "postgres_dsn_env": DSN_ENV, "ledger_path": None} if kind == "postgres" else {}
    api = ApiHarness.create(work, assets / "adapters", assets / "base", engine=FakeEngineClient(tokens=16),
                            config={"server": {"limits": limits, "usage": usage}, "deployment": {"ingress_replicas": 2}})
    body = {"model": "poet", "prompt": "hello there", "max_tokens": 16}
    try:
        for _ in range(50):  # warm-up: the tokenizer, connections, prepared statements
            assert api.client.post("/v1/completions", json=body, headers=api.key("acme")).status_code == 200
        latencies = []
        for _ in range(n):
            started = time.perf_counter()
            response = api.client.post("/v1/completions", json=body, headers=api.key("acme"))
            latencies.append((time.perf_counter() - started) * 1e3)
            assert response.status_code == 200, response.text
        if kind == "postgres":
            assert api.ctx.limiter.store_up
    finally:
        api.ctx.close()
    return {"p50_ms": _pct(latencies, 0.5), "p99_ms": _pct(latencies, 0.99), "mean_ms": statistics.fmean(latencies)}


# ---- 3. the ledger -----------------------------------------------------------------------

def ledger_round(kind: str, dsn: str, work: Path, batch_rows: tuple[int, ...], records: int) -> dict:
    from deployments.tenancy.ledger import UsageLedger
    from deployments.tenancy.ledger_postgres import PostgresLedgerStore

    work.mkdir(parents=True)
    if kind == "postgres":
        ledger = UsageLedger(store=PostgresLedgerStore(dsn), journal_dir=work / "journal", background=False)
    else:
        ledger = UsageLedger(work / "usage.sqlite", background=False)
    out: dict = {}
    try:
        started = time.perf_counter()
        for i in range(records):
            ledger.record(f"k{i % 50}", "acme", f"a{i % 20}", 30, 40)
        out["record_us"] = (time.perf_counter() - started) / records * 1e6
        ledger.flush()
        for rows in batch_rows:
            times = []
            for trial in range(5):
                for i in range(rows):
                    ledger.record(f"key-{trial}-{i}", "acme", f"adapter-{i % 20}", 30, 40)
                started = time.perf_counter()
                ledger.flush()
                times.append((time.perf_counter() - started) * 1e3)
            flush_ms = statistics.median(times)
            out[f"flush_{rows}_rows_ms"] = flush_ms
            out[f"flush_{rows}_rows_per_s"] = rows / (flush_ms / 1e3)
    finally:
        ledger.close()
    return out


# ---- the run -------------------------------------------------------------------------------

def _collect(rounds: list[dict], path: tuple[str, ...]) -> dict:
    values = []
    for r in rounds:
        value = r
        for part in path:
            value = value[part]
        values.append(value)
    return _summary(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sequential", type=int, default=2000, help="limiter calls per round, one at a time")
    parser.add_argument("--api-requests", type=int, default=500)
    args = parser.parse_args()

    from tests.postgres_server import PostgresServer

    server = PostgresServer.start(fsync=True)
    work = Path(tempfile.mkdtemp(prefix="lorafleet-bench-usage-"))
    results: dict = {"limiter": {"memory": [], "shared": []}, "api": {"sqlite": [], "postgres": []},
                     "ledger": {"sqlite": [], "postgres": []}}
    try:
        dsn = server.create_database("bench")
        os.environ[DSN_ENV] = dsn
        for rnd in range(args.rounds):
            order = (0, 1) if rnd % 2 == 0 else (1, 0)
            for i in order:
                kind = ("memory", "shared")[i]
                results["limiter"][kind].append(asyncio.run(limiter_round(kind, dsn, args.sequential)))
            for i in order:
                kind = ("sqlite", "postgres")[i]
                results["api"][kind].append(api_round(kind, dsn, args.api_requests, work / f"api-{kind}-{rnd}"))
            for i in order:
                kind = ("sqlite", "postgres")[i]
                results["ledger"][kind].append(ledger_round(kind, dsn, work / f"ledger-{kind}-{rnd}", (1, 100, 1000), 20_000))
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        server.destroy()

    lim, api, led = results["limiter"], results["api"], results["ledger"]
    summary = {
        "limiter": {kind: {
            "sequential_p50_us": _collect(lim[kind], ("sequential_p50_us",)),
            "sequential_p99_us": _collect(lim[kind], ("sequential_p99_us",)),
            "concurrent_100_keys_requests_per_s": _collect(lim[kind], ("concurrent_100_keys", "requests_per_s")),
            "concurrent_100_keys_p99_us": _collect(lim[kind], ("concurrent_100_keys", "p99_us")),
            "concurrent_hot_key_requests_per_s": _collect(lim[kind], ("concurrent_hot_key", "requests_per_s")),
        } for kind in lim},
        "api": {kind: {k: _collect(api[kind], (k,)) for k in ("p50_ms", "p99_ms")} for kind in api},
        "ledger": {kind: {k: _collect(led[kind], (k,)) for k in led[kind][0]} for kind in led},
    }
    result = {**result_header("usage-postgres"), "postgres": "15 (Debian), 127.0.0.1, fsync on",
              "rounds": args.rounds, "summary": summary, "runs": results}
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    update_readme(REPO / "bench" / "README.md", "usage-postgres", _table(summary, result))
    print(json.dumps(summary, indent=2))
    return 0


def _fmt(s: dict, digits: int = 0) -> str:
    f = f"{{:,.{digits}f}}"
    return f"{f.format(s['median'])} ({f.format(s['min'])}–{f.format(s['max'])})"


def _table(summary: dict, result: dict) -> str:
    lim, api, led = summary["limiter"], summary["api"], summary["ledger"]
    lines = [
        "| per request: admit + reserve + settle | in memory | PostgreSQL (shared) |",
        "|---|---|---|",
        f"| one caller, p50 | {_fmt(lim['memory']['sequential_p50_us'])} µs | {_fmt(lim['shared']['sequential_p50_us'])} µs |",
        f"| one caller, p99 | {_fmt(lim['memory']['sequential_p99_us'])} µs | {_fmt(lim['shared']['sequential_p99_us'])} µs |",
        f"| 64 callers, 100 keys | {_fmt(lim['memory']['concurrent_100_keys_requests_per_s'])} req/s | {_fmt(lim['shared']['concurrent_100_keys_requests_per_s'])} req/s |",
        f"| 64 callers, 100 keys, p99 | {_fmt(lim['memory']['concurrent_100_keys_p99_us'])} µs | {_fmt(lim['shared']['concurrent_100_keys_p99_us'])} µs |",
        f"| 64 callers, one hot key | {_fmt(lim['memory']['concurrent_hot_key_requests_per_s'])} req/s | {_fmt(lim['shared']['concurrent_hot_key_requests_per_s'])} req/s |",
        "",
        "| a completion through the HTTP API (no Ray, instant engine) | SQLite + in memory | PostgreSQL + shared |",
        "|---|---|---|",
        f"| p50 | {_fmt(api['sqlite']['p50_ms'], 2)} ms | {_fmt(api['postgres']['p50_ms'], 2)} ms |",
        f"| p99 | {_fmt(api['sqlite']['p99_ms'], 2)} ms | {_fmt(api['postgres']['p99_ms'], 2)} ms |",
        "",
        "| usage ledger | SQLite | PostgreSQL |",
        "|---|---|---|",
        f"| `record` (request path) | {_fmt(led['sqlite']['record_us'], 1)} µs | {_fmt(led['postgres']['record_us'], 1)} µs |",
    ]
    for rows in (1, 100, 1000):
        lines.append(f"| flush of {rows:,} distinct rows | {_fmt(led['sqlite'][f'flush_{rows}_rows_ms'], 1)} ms "
                     f"({_fmt(led['sqlite'][f'flush_{rows}_rows_per_s'])} rows/s) | {_fmt(led['postgres'][f'flush_{rows}_rows_ms'], 1)} ms "
                     f"({_fmt(led['postgres'][f'flush_{rows}_rows_per_s'])} rows/s) |")
    lines += ["", f"`python -m bench.usage_postgres` — {result['date']}, commit {result['commit']}, {result['rounds']} "
              f"alternating rounds, median (min–max); {result['postgres']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
