"""`python -m bench PLAN.yaml`: run a benchmark plan (see bench/workloads/ and
bench/harness/runner.py), or drive an already running server once with `--url`.
A source-tree tool: it needs this checkout's plans, and writes bench/results/ and
bench/README.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.harness.runner import drive_running_server, run_plan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="benchmark routing policies (fresh server per policy and round), or drive --url")
    parser.add_argument("plan", help="benchmark plan YAML (see bench/workloads/)")
    parser.add_argument("--rounds", type=int, help="override the plan's rounds")
    parser.add_argument("--policies", help="comma-separated policy (or variant) labels, overriding the plan's")
    parser.add_argument("--out", help="result JSON (default bench/results/<plan name>.json)")
    parser.add_argument("--url", help="drive this running server once instead of starting servers")
    parser.add_argument("--base-model", default="lorafleet-tiny-llama", help="base model name (with --url)")
    parser.add_argument("--lock-each-run", metavar="FILE", help="hold an exclusive flock on FILE during each run, so other heavy jobs sharing that lock never overlap a measurement")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = Path(args.plan)
    if args.url:
        print(json.dumps(drive_running_server(plan, args.url, args.base_model), indent=2))
        return 0
    policies = tuple(args.policies.split(",")) if args.policies else None
    result = run_plan(plan, rounds=args.rounds, policies=policies, out=Path(args.out) if args.out else None,
                      run_lock=Path(args.lock_each_run) if args.lock_each_run else None)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
