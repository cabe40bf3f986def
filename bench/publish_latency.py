"""Publish latency: from `POST /v1/adapters` (upload) to the first successful completion
of the new adapter, on a live 3-replica fleet, with no restart in between.

    python -m bench.publish_latency [--trials 10] [--store local|s3]

`--store s3` serves the adapters from moto's S3 server on 127.0.0.1 (started here), with
the default `adapters.refresh_s` (2 s) listing cache. Each trial uploads a fresh name (a
demo adapter's files), then sends 1-token completions back to back until one answers 200;
it records the upload time, the time to the first 200 (from the start of the upload) and
how many requests were refused (404) before. Writes bench/results/publish-latency-<store>.json
and a table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]

from adapters.archive import pack_folder
from bench.harness.runner import Server, _free_port, result_header, update_readme

ASSETS = REPO / ".bench-assets" / "publish"


def one_trial(base_url: str, folder: Path, timeout_s: float = 60) -> dict:
    name = f"pub-{uuid.uuid4().hex[:8]}"
    archive = pack_folder(folder)
    with httpx.Client(base_url=base_url, timeout=120) as http:
        started = time.perf_counter()
        response = http.post("/v1/adapters", data={"name": name}, files={"file": ("a.tar.gz", archive, "application/gzip")})
        uploaded = time.perf_counter()
        response.raise_for_status()
        refused = 0
        while True:
            r = http.post("/v1/completions", json={"model": name, "prompt": "hi", "max_tokens": 1, "temperature": 0})
            if r.status_code == 200:
                break
            if r.status_code != 404 or time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"{name}: {r.status_code} {r.text}")
            refused += 1
        served = time.perf_counter()
        http.delete(f"/v1/adapters/{name}")
    return {"name": name, "archive_bytes": len(archive), "upload_ms": round((uploaded - started) * 1000, 1),
            "first_completion_ms": round((served - started) * 1000, 1), "refused_before": refused,
            "replica": r.headers.get("x-lorafleet-replica")}


def stats(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 1), "min": ordered[0], "max": ordered[-1],
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--store", choices=("local", "s3"), default="local")
    parser.add_argument("--adapter", default="haiku", help="demo adapter whose files are uploaded")
    args = parser.parse_args()

    from factory.demo_assets import BASE_NAME, build_demo_assets

    if not (ASSETS / ".complete").exists():
        build_demo_assets(ASSETS)
        (ASSETS / ".complete").write_text("ok")
    folder = ASSETS / "adapters" / args.adapter
    work = REPO / ".bench-assets" / f"publish-{args.store}-{uuid.uuid4().hex[:6]}"
    (work / "adapters").mkdir(parents=True)
    moto = None
    adapters_config = {"uri": str(work / "adapters"), "cache_dir": str(work / "cache")}
    if args.store == "s3":
        import boto3
        from moto.server import ThreadedMotoServer

        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        endpoint = "http://{}:{}".format(*moto.get_host_and_port())
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="lorafleet-bench")
        adapters_config = {"uri": "s3://lorafleet-bench/adapters", "s3_endpoint_url": endpoint, "cache_dir": str(work / "cache")}
    port = _free_port()
    config = {
        "model": {"source": str(ASSETS / "base"), "served_name": BASE_NAME},
        "engine": {"max_loras": 2, "max_cpu_loras": 4, "max_lora_rank": 16, "kv_cache_gib": 1},
        "deployment": {"num_replicas": 3, "replica_cpus": 0.5},
        "adapters": adapters_config,
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": _free_port()},
    }
    server = Server(config, work / "serve.log")
    try:
        server.wait_ready()
        one_trial(server.base_url, folder)  # warm-up: first request paths, imports
        trials = [one_trial(server.base_url, folder) for _ in range(args.trials)]
    finally:
        server.stop()
        if moto is not None:
            moto.stop()
    result = {
        **result_header(f"publish-latency-{args.store}"), "store": args.store, "replicas": 3,
        "adapter": args.adapter,
        "upload_ms": stats([t["upload_ms"] for t in trials]),
        "first_completion_ms": stats([t["first_completion_ms"] for t in trials]),
        "refused_before_first_success": sum(t["refused_before"] for t in trials),
        "trials": trials,
    }
    out = REPO / "bench" / "results" / f"publish-latency-{args.store}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    u, f = result["upload_ms"], result["first_completion_ms"]
    table = (f"**publish-latency-{args.store}** — {result['date']}, commit `{result['commit']}`, {args.trials} trials, "
             f"3 replicas, {store_label(args.store)}, a {trials[0]['archive_bytes'] // 1024} KB adapter archive.\n\n"
             "| upload (ms) median (min–max) | upload → first completion (ms) median (min–max) | p90 | 404s before success |\n"
             "|---|---|---|---|\n"
             f"| {u['median']} ({u['min']}–{u['max']}) | {f['median']} ({f['min']}–{f['max']}) | {f['p90']} | "
             f"{result['refused_before_first_success']} |")
    update_readme(REPO / "bench" / "README.md", f"publish-latency-{args.store}", table)
    print(json.dumps({k: result[k] for k in ("upload_ms", "first_completion_ms", "refused_before_first_success")}, indent=2))
    return 0


def store_label(store: str) -> str:
    return "local-directory store" if store == "local" else "S3 store (moto on 127.0.0.1, refresh_s 2)"


if __name__ == "__main__":
    sys.exit(main())
