"""The benchmark runner (`python -m bench PLAN.yaml`): compare routing policies on identical engines, in one invocation.

A plan (YAML, see bench/workloads/) names the fleet overrides, the adapter set, the
workload and the policies. For each round, each policy gets a fresh server (`lorafleet
serve` with `routing.policy` set; restarting clears every cache, so no policy inherits
another's warm adapters), a warmup, and a measured window. Policies alternate order
across rounds because this machine is small and noisy: compare medians and ranges of
repeated, interleaved runs, never one run each. Results go to bench/results/<name>.json
and a table in bench/README.md, with the machine and the commit.
"""

from __future__ import annotations

import asyncio
import copy
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from cluster.sim.workload import WorkloadSpec
from deployments.config import load_config
from bench.harness.loadgen import LoadSpec, measure

REPO = Path(__file__).resolve().parents[2]
BENCH_ASSETS = REPO / ".bench-assets"


@dataclass(frozen=True)
class AdapterSet:
    """Synthetic adapters for a benchmark: how many, how big (rank, targets)."""

    count: int = 48
    rank: int = 8
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 100

    def names(self) -> list[str]:
        return [f"bench-{i:04d}" for i in range(self.count)]


@dataclass(frozen=True)
class Variant:
    """One contender in a plan: a routing policy plus fleet overrides of its own.

    In a plan's `policies:` list, a bare name is a variant labelled by its policy;
    `{label: L, policy: P, fleet: {...}}` compares configurations beyond the policy
    (e.g. the placement controller on and off) in the same alternating rounds."""

    label: str
    policy: str
    fleet: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, entry: str | dict) -> "Variant":
        if isinstance(entry, str):
            return cls(entry, entry)
        return cls(entry["label"], entry.get("policy", "adapter_affinity"), dict(entry.get("fleet", {})))


@dataclass(frozen=True)
class BenchPlan:
    name: str
    fleet: dict
    adapters: AdapterSet
    workload: WorkloadSpec
    load: LoadSpec
    variants: tuple[Variant, ...]
    rounds: int = 3

    @property
    def policies(self) -> tuple[str, ...]:
        """The variants' labels, in plan order."""
        return tuple(v.label for v in self.variants)

    @classmethod
    def from_file(cls, path: str | Path) -> "BenchPlan":
        data = yaml.safe_load(Path(path).read_text())
        adapters = dict(data.get("adapters", {}))
        if "target_modules" in adapters:
            adapters["target_modules"] = tuple(adapters["target_modules"])
        return cls(
            name=data["name"],
            fleet=data.get("fleet", {}),
            adapters=AdapterSet(**adapters),
            workload=WorkloadSpec.from_dict(data["workload"]),
            load=LoadSpec(**data.get("load", {})),
            variants=tuple(Variant.parse(entry) for entry in data["policies"]),
            rounds=int(data.get("rounds", 3)),
        )


def build_assets(adapters: AdapterSet) -> tuple[Path, Path]:
    """Base model + the plan's adapters, cached by content of the adapter spec."""
    from factory.demo_assets import BASE_NAME, DemoAdapter, build_adapter, build_demo_assets

    key = hashlib.sha256(json.dumps(dataclasses.asdict(adapters), sort_keys=True).encode()).hexdigest()[:12]
    root = BENCH_ASSETS / key
    done = root / ".complete"
    if not done.exists():
        build_demo_assets(root, adapters=())
        for i, name in enumerate(adapters.names()):
            spec = DemoAdapter(name, adapters.seed + i, adapters.rank, adapters.target_modules)
            build_adapter(root / "base", spec, root / "adapters" / name)
        done.write_text(BASE_NAME)
    return root / "base", root / "adapters"


def _deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fleet_config(plan: BenchPlan, variant: Variant | str, base: Path, adapters: Path, port: int) -> dict:
    if isinstance(variant, str):
        variant = Variant.parse(variant)
    default = load_config(REPO / "configs" / "default.yaml").model_dump(mode="json")
    config = _deep_merge(_deep_merge(default, plan.fleet), variant.fleet)
    config["models"][0]["source"] = str(base)  # the default config dumps its one base as `models:`
    config["adapters"]["uri"] = str(adapters)
    config["server"].update(host="127.0.0.1", port=port)
    config.setdefault("routing", {})["policy"] = variant.policy
    return config


class Server:
    """`lorafleet serve` in a subprocess; stopped with SIGTERM (its clean path)."""

    def __init__(self, config: dict, log_path: Path):
        self.config_file = Path(tempfile.mkstemp(suffix=".yaml")[1])
        self.config_file.write_text(yaml.safe_dump(config))
        self.base_url = f"http://127.0.0.1:{config['server']['port']}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deployments.cli", "serve", "--config", str(self.config_file)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while "is serving" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server failed to start; see {self.log_path}")
            time.sleep(2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        self.config_file.unlink(missing_ok=True)


def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(mem_gib, 1), "python": platform.python_version()}


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def result_header(name: str) -> dict:
    """What every benchmark result file starts with: its name, when, at which commit,
    on which machine, so a number in bench/results/ can always be traced back."""
    return {
        "name": name,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": machine_info(),
    }


def summarize_runs(runs: list[dict], policies: tuple[str, ...]) -> dict:
    summary = {}
    for policy in policies:
        reports = [r["report"] for r in runs if r["policy"] == policy]
        if not reports:
            continue
        entry = {"runs": len(reports)}
        for key in ("output_tok_per_s", "ttft_p50_ms", "ttft_p99_ms", "e2e_p99_ms", "adapter_loads_per_1k_requests", "errors"):
            values = [r[key] for r in reports if r.get(key) is not None]
            if values:
                entry[key] = {"median": round(statistics.median(values), 1), "min": min(values), "max": max(values)}
        summary[policy] = entry
    return summary


def markdown_table(result: dict) -> str:
    rows = ["| policy | output tok/s median (min–max) | TTFT p50 ms | TTFT p99 ms | e2e p99 ms | adapter loads / 1k req | errors |",
            "|---|---|---|---|---|---|---|"]
    for policy, s in result["summary"].items():
        tok = s["output_tok_per_s"]
        def med(key):
            return s[key]["median"] if key in s else "—"
        rows.append(f"| `{policy}` | {tok['median']} ({tok['min']}–{tok['max']}) | {med('ttft_p50_ms')} | {med('ttft_p99_ms')} | "
                    f"{med('e2e_p99_ms')} | {med('adapter_loads_per_1k_requests')} | {med('errors')} |")
    m = result["machine"]
    head = (f"**{result['name']}** — {result['date']}, commit `{result['commit']}`, {m['nproc']} cores ({m['cpu_model']}), "
            f"{result['rounds']} alternating rounds; medians over rounds. Plan: `{result['plan_file']}`.")
    return head + "\n\n" + "\n".join(rows)


def update_readme(readme: Path, name: str, table: str) -> None:
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    block = f"{begin}\n{table}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)


@contextlib.contextmanager
def _exclusive(lock_file: Path | None):
    """Hold an exclusive flock on `lock_file` (None: no-op). Taken per run, so other
    heavy jobs sharing the lock interleave between runs but never overlap one."""
    if lock_file is None:
        yield
        return
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_plan(plan_file: Path, *, rounds: int | None = None, policies: tuple[str, ...] | None = None,
             out: Path | None = None, readme: Path | None = REPO / "bench" / "README.md",
             run_lock: Path | None = None) -> dict:
    plan = BenchPlan.from_file(plan_file)
    policies = policies or plan.policies
    variants = {v.label: v for v in plan.variants}
    unknown = [p for p in policies if p not in variants]
    if unknown:
        raise ValueError(f"{plan_file}: no policy/variant labelled {unknown}; the plan has {list(variants)}")
    rounds = rounds or plan.rounds
    base, adapter_dir = build_assets(plan.adapters)
    names = plan.adapters.names()
    log_dir = REPO / ".bench-assets" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for round_no in range(rounds):
        order = policies[round_no % len(policies):] + policies[: round_no % len(policies)]
        for policy in order:
            config = fleet_config(plan, variants[policy], base, adapter_dir, _free_port())
            with _exclusive(run_lock):
                server = Server(config, log_dir / f"{plan.name}-{round_no}-{policy}.log")
                try:
                    server.wait_ready()
                    report = asyncio.run(measure(server.base_url, config["models"][0]["served_name"], plan.workload, plan.load, names))
                finally:
                    server.stop()
            runs.append({"round": round_no, "policy": policy, "report": report.to_dict()})
            print(f"round {round_no} {policy}: {report.output_tok_per_s} tok/s, ttft p99 {report.ttft_p99_ms} ms, "
                  f"loads/1k {report.adapter_loads_per_1k_requests}, errors {report.errors}", flush=True)
    result = {
        **result_header(plan.name),
        "plan_file": str(plan_file.relative_to(REPO)) if plan_file.is_relative_to(REPO) else str(plan_file),
        "rounds": rounds,
        "plan": {"fleet": plan.fleet, "variants": [dataclasses.asdict(v) for v in plan.variants], "adapters": dataclasses.asdict(plan.adapters), "workload": plan.workload.to_dict(),
                 "load": dataclasses.asdict(plan.load)},
        "runs": runs,
        "summary": summarize_runs(runs, policies),
    }
    out = out or REPO / "bench" / "results" / f"{plan.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if readme is not None:
        update_readme(readme, plan.name, markdown_table(result))
    return result


def drive_running_server(plan_file: Path, url: str, base_model: str) -> dict:
    """One measured window against a server someone else started (no restarts)."""
    import httpx

    plan = BenchPlan.from_file(plan_file)
    url = url.rstrip("/")
    served = sorted(m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"] if m.get("parent"))
    if not served:
        raise RuntimeError(f"{url} serves no adapters")
    names = [served[i % len(served)] for i in range(plan.workload.adapters)]  # popularity ranks -> served adapters
    report = asyncio.run(measure(url, base_model, plan.workload, plan.load, names))
    return report.to_dict()
