"""Drive a lorafleet server with bounded requests and classify every outcome.

Used by the resilience benchmarks (bench/replica_kill.py, bench/overload.py) and the
integration tests that kill a replica or overload the fleet. Unlike `loadgen` (which
measures throughput of a trace), this is about *what each client saw*: a success, an
error status (with or without Retry-After, OpenAI-shaped or not), a stream cut with an
error event, a stream that ended without `[DONE]`, or a client-side timeout (a hang).
Every request has a client-side timeout, so a run always ends.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass

import httpx
import psutil

from bench.harness.loadgen import _percentile

OK, ERROR_STATUS, STREAM_CUT, TRUNCATED, TIMEOUT, TRANSPORT = "ok", "error_status", "stream_cut", "truncated", "timeout", "transport"


@dataclass(eq=False)  # identity equality: outcomes are tracked in sets while in flight
class Outcome:
    kind: str  # one of OK, ERROR_STATUS, STREAM_CUT, TRUNCATED, TIMEOUT, TRANSPORT
    stream: bool
    status: int | None
    started_s: float  # since the run's start
    latency_s: float
    retry_after: str | None = None
    error_code: str | None = None
    openai_shaped: bool = True  # an error body/event had {"error": {message, type, param, code}}
    replica: str | None = None
    retried: bool = False  # the ingress retried it on another replica (x-lorafleet-attempts)
    head_s: float | None = None  # when the response head arrived, since the run's start
    server_timing: dict[str, float] | None = None  # the ingress's Server-Timing header, ms per phase


def is_openai_error(payload: object) -> bool:
    error = payload.get("error") if isinstance(payload, dict) else None
    return isinstance(error, dict) and set(error) == {"message", "type", "param", "code"} and bool(error["message"])


def completion_body(model: str, *, stream: bool, max_tokens: int, rng: random.Random) -> dict:
    """A small completion request; `ignore_eos` makes its length exactly `max_tokens`."""
    prompt = "".join(rng.choice("abcdefghij ") for _ in range(rng.randint(4, 24)))
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": stream}


async def send(client: httpx.AsyncClient, body: dict, t0: float, timeout_s: float,
               open_streams: set[Outcome] | None = None) -> Outcome:
    """POST /v1/completions and classify what came back, within `timeout_s` overall.
    While a 200 stream is being read, its Outcome (whose `replica` the response head
    named) is in `open_streams`: that is where work is in flight right now."""
    open_streams = set() if open_streams is None else open_streams
    stream = bool(body.get("stream"))
    started = time.monotonic()
    outcome = Outcome(TRANSPORT, stream, None, started - t0, 0.0)
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", "/v1/completions", json=body) as response:
                outcome.status = response.status_code
                outcome.head_s = time.monotonic() - t0
                outcome.replica = response.headers.get("x-lorafleet-replica")
                outcome.retried = response.headers.get("x-lorafleet-attempts") == "2"
                outcome.server_timing = parse_server_timing(response.headers.get("server-timing"))
                if response.status_code != 200:
                    payload = _json_or_none(await response.aread())
                    outcome.kind = ERROR_STATUS
                    outcome.retry_after = response.headers.get("retry-after")
                    outcome.openai_shaped = is_openai_error(payload)
                    outcome.error_code = payload["error"]["code"] if outcome.openai_shaped else None
                elif not stream:
                    json.loads(await response.aread())
                    outcome.kind = OK
                else:
                    open_streams.add(outcome)
                    try:
                        outcome.kind = await _read_sse(response, outcome)
                    finally:
                        open_streams.discard(outcome)
    except TimeoutError:
        outcome.kind = TIMEOUT
    except (httpx.HTTPError, json.JSONDecodeError):
        outcome.kind = TRANSPORT
        outcome.openai_shaped = False
    outcome.latency_s = time.monotonic() - started
    return outcome


def parse_server_timing(value: str | None) -> dict[str, float] | None:
    """`admission;dur=1.2, engine;dur=30.5` -> {"admission": 1.2, "engine": 30.5}."""
    if not value:
        return None
    phases = {}
    for part in value.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur":
                try:
                    phases[name] = float(number)
                except ValueError:
                    pass
    return phases or None


def _json_or_none(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # e.g. a proxy's plain-text error: counted as not OpenAI-shaped


async def _read_sse(response: httpx.Response, outcome: Outcome) -> str:
    errored = False
    async for line in response.aiter_lines():
        if line == "data: [DONE]":
            return STREAM_CUT if errored else OK
        if line.startswith("data: "):
            chunk = json.loads(line[6:])
            if "error" in chunk:
                errored = True
                outcome.openai_shaped = is_openai_error(chunk)
                outcome.error_code = chunk["error"].get("code") if outcome.openai_shaped else None
    return TRUNCATED  # the stream ended without [DONE]


async def closed_loop(client, make_body, *, concurrency: int, duration_s: float, timeout_s: float, t0: float | None = None,
                      open_streams: set[Outcome] | None = None) -> list[Outcome]:
    """`concurrency` clients, each sending its next request when the last one ends."""
    t0 = time.monotonic() if t0 is None else t0
    outcomes: list[Outcome] = []
    end = time.monotonic() + duration_s

    async def client_loop() -> None:
        while time.monotonic() < end:
            outcomes.append(await send(client, make_body(), t0, timeout_s, open_streams))

    await asyncio.gather(*[client_loop() for _ in range(concurrency)])
    return outcomes


async def open_loop(client, make_body, *, rate_per_s: float, duration_s: float, timeout_s: float, seed: int = 0) -> list[Outcome]:
    """Poisson arrivals at `rate_per_s` for `duration_s`, whatever the server does
    (that is what overload looks like); returns when every request has ended."""
    rng = random.Random(seed)
    t0 = time.monotonic()
    tasks = []
    next_at = 0.0
    while next_at < duration_s:
        delay = next_at - (time.monotonic() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(client, make_body(), t0, timeout_s)))
        next_at += rng.expovariate(rate_per_s)
    return list(await asyncio.gather(*tasks))


def summarize(outcomes: list[Outcome]) -> dict:
    """Counts per kind and status, latency percentiles of the successes (ms)."""
    kinds: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for o in outcomes:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    ok_ms = [o.latency_s * 1000 for o in outcomes if o.kind == OK]
    shed = [o for o in outcomes if o.status in (429, 503)]
    return {
        "requests": len(outcomes),
        "kinds": kinds,
        "statuses": statuses,
        "ok_p50_ms": _r(_percentile(ok_ms, 50)),
        "ok_p99_ms": _r(_percentile(ok_ms, 99)),
        "ok_max_ms": _r(max(ok_ms, default=None) if ok_ms else None),
        "retried": sum(1 for o in outcomes if o.retried),
        "shed": len(shed),
        "shed_with_retry_after": sum(1 for o in shed if o.retry_after),
        "not_openai_shaped": sum(1 for o in outcomes if o.kind != OK and not o.openai_shaped),
        "error_codes": _count(f"{o.status}:{o.error_code}" for o in outcomes if o.kind != OK),
    }


def time_split(outcomes: list[Outcome], kind: str = OK) -> dict:
    """Where `kind` outcomes' time went, p50 / p99 in ms, from the ingress's Server-Timing:
    `admission` (arrival at the ingress -> the gate's answer), `engine` (-> the answer),
    and `outside` (the client's latency minus both: Ray's HTTP proxy, its queue for the
    ingress, the network, the client). Outcomes without the header are counted apart."""
    chosen = [o for o in outcomes if o.kind == kind or (kind == "shed" and o.status in (429, 503))]
    timed = [o for o in chosen if o.server_timing and "admission" in o.server_timing]
    phases: dict[str, list[float]] = {"admission": [], "engine": [], "outside": []}
    for o in timed:
        inside = o.server_timing["admission"] + o.server_timing.get("engine", 0.0)
        phases["admission"].append(o.server_timing["admission"])
        if "engine" in o.server_timing:
            phases["engine"].append(o.server_timing["engine"])
        phases["outside"].append(max(0.0, o.latency_s * 1000 - inside))
    split = {name: {"p50": _r(_percentile(v, 50)), "p99": _r(_percentile(v, 99))} for name, v in phases.items() if v}
    return {"requests": len(chosen), "without_header": len(chosen) - len(timed), **split}


def _count(keys) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def as_dicts(outcomes: list[Outcome]) -> list[dict]:
    return [asdict(o) for o in outcomes]


# --- processes of a local fleet (127.0.0.1 runs only) -------------------------------

def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def fleet_processes(root_pid: int) -> list[psutil.Process]:
    """Every process of a `lorafleet serve` started as `root_pid` (Ray, Serve, vLLM)."""
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def engine_replica_processes(root_pid: int) -> list[psutil.Process]:
    """The Ray actor processes running EngineReplica (each parent of one EngineCore)."""
    return [p for p in fleet_processes(root_pid) if "ServeReplica:" in _cmdline(p) and "EngineReplica" in _cmdline(p)]


def engine_core_processes(root_pid: int) -> list[psutil.Process]:
    return [p for p in fleet_processes(root_pid) if "EngineCore" in _cmdline(p) or "EngineCore" in p.name()]


def all_engine_cores() -> list[psutil.Process]:
    """Every EngineCore on the machine, orphans included (an orphan leaves the fleet's tree)."""
    found = []
    for p in psutil.process_iter():
        if "EngineCore" in _cmdline(p):
            found.append(p)
    return found


def rss_bytes(processes: list[psutil.Process]) -> int:
    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


# --- scenarios -------------------------------------------------------------------------

def live_replicas(base_url: str) -> set[str]:
    """Replica ids the fleet controller currently hears from, healthy ones only."""
    replicas = httpx.get(f"{base_url}/fleet/replicas", timeout=30).json()["replicas"]
    return {r["replica_id"] for r in replicas if r["healthy"]}


def engine_replicas_by_id(base_url: str, root_pid: int) -> dict[str, psutil.Process]:
    """Replica id -> process of every engine replica, by the pid its own report carries."""
    by_pid = {p.pid: p for p in engine_replica_processes(root_pid)}
    reports = httpx.get(f"{base_url}/fleet/replicas", timeout=30).json()["replicas"]
    return {r["replica_id"]: by_pid[r["pid"]] for r in reports if r.get("pid") in by_pid}


def replica_with_most_open_streams(open_streams: set[Outcome], known: Collection[str],
                                   head_after_s: float = float("-inf")) -> tuple[str, int] | None:
    """(replica id, how many of the client's open streams it serves), the most first;
    None when no open stream is on a `known` replica. Only streams whose response head
    arrived after `head_after_s` count: an older stream may be all generated already,
    its last bytes still on their way, so killing its replica would cut nothing."""
    counts: dict[str, int] = {}
    for outcome in open_streams:
        if outcome.replica in known and outcome.head_s is not None and outcome.head_s > head_after_s:
            counts[outcome.replica] = counts.get(outcome.replica, 0) + 1
    if not counts:
        return None
    busiest = max(counts, key=counts.get)
    return busiest, counts[busiest]


# A stream counts as mid-way for this long after its response head arrived (the replica
# took it): well under the time its tokens take on the CPU test fleet (48 tokens took as
# little as ~0.7 s on a lightly loaded replica; CI once killed one 0.7 s in, as it ended).
# Not since it was sent: under load a request can queue longer than that before its head.
FRESH_STREAM_S = 0.3


@dataclass
class Kill:
    at_s: float  # on the load's clock
    pid: int
    engine_cores: list[psutil.Process]  # the victim's vLLM EngineCore children, to check they exit too
    replica_id: str = ""
    open_streams: int = 0  # the client's streams open on the victim when it was killed


async def load_with_kill(base_url: str, root_pid: int, models: list[str], *, concurrency: int, duration_s: float,
                         kill_at_s: float, timeout_s: float, max_tokens: int = 48, seed: int = 0,
                         on_kill=None) -> tuple[list[Outcome], Kill]:
    """A closed-loop load of half streaming, half non-streaming requests over `models`;
    `kill_at_s` into it, the engine replica process serving most of its open streams
    gets SIGKILL. `on_kill()` runs right after the kill."""
    rng = random.Random(seed)

    def make_body() -> dict:
        return completion_body(rng.choice(models), stream=rng.random() < 0.5, max_tokens=max_tokens, rng=rng)

    # Which process is which replica is looked up before the load, so the kill follows
    # the choice with no await in between: an idle victim proves nothing, and the
    # fleet's periodic reports lag, but the heads of streams still being read say
    # exactly where work is in flight at that moment.
    processes = await asyncio.to_thread(engine_replicas_by_id, base_url, root_pid)
    t0 = time.monotonic()
    open_streams: set[Outcome] = set()

    async def kill_later() -> Kill:
        await asyncio.sleep(kill_at_s)
        deadline = time.monotonic() + 10
        while (choice := replica_with_most_open_streams(open_streams, processes, time.monotonic() - t0 - FRESH_STREAM_S)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"for 10 s no engine replica took a stream within {FRESH_STREAM_S} s before "
                                   f"({len(open_streams)} streams open, replicas known: {sorted(processes)})")
            await asyncio.sleep(0.02)
        replica_id, streams = choice
        victim = processes[replica_id]
        cores = [c for c in victim.children(recursive=True) if "EngineCore" in _cmdline(c)]
        victim.kill()
        if on_kill is not None:
            on_kill()
        return Kill(time.monotonic() - t0, victim.pid, cores, replica_id, streams)

    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        outcomes, kill = await asyncio.gather(
            closed_loop(client, make_body, concurrency=concurrency, duration_s=duration_s, timeout_s=timeout_s, t0=t0,
                        open_streams=open_streams),
            kill_later(),
        )
    return outcomes, kill


def wait_recovered(base_url: str, before: set[str], expected: int, *, timeout_s: float, model: str) -> float | None:
    """Seconds until `expected` healthy replicas are live, one of them new, and a
    request succeeds; None if that did not happen within `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            live = live_replicas(base_url)
            if len(live) >= expected and live - before:
                body = {"model": model, "prompt": "ok", "max_tokens": 2}
                if httpx.post(f"{base_url}/v1/completions", json=body, timeout=60).status_code == 200:
                    return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return None


async def sample_rss(root_pid: int, stop: asyncio.Event, period_s: float = 1.0) -> list[tuple[float, int]]:
    """(seconds, total RSS bytes of the fleet's processes) every `period_s` until `stop`."""
    t0 = time.monotonic()
    samples = []
    while not stop.is_set():
        procs = await asyncio.to_thread(fleet_processes, root_pid)
        samples.append((round(time.monotonic() - t0, 1), await asyncio.to_thread(rss_bytes, procs)))
        try:
            await asyncio.wait_for(stop.wait(), period_s)
        except TimeoutError:
            pass
    return samples


async def measure_capacity(base_url: str, make_body, *, concurrency: int, duration_s: float, timeout_s: float) -> tuple[float, dict]:
    """Closed-loop throughput (successful requests per second) and its summary."""
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency * 2)) as client:
        started = time.monotonic()
        outcomes = await closed_loop(client, make_body, concurrency=concurrency, duration_s=duration_s, timeout_s=timeout_s)
        span = time.monotonic() - started
    ok = sum(1 for o in outcomes if o.kind == OK)
    return ok / span, summarize(outcomes)


async def overload(base_url: str, root_pid: int, make_body, *, rate_per_s: float, duration_s: float, timeout_s: float,
                   seed: int = 0) -> tuple[list[Outcome], list[tuple[float, int]]]:
    """Open-loop Poisson load at `rate_per_s` for `duration_s`, sampling the fleet's RSS."""
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        sampler = asyncio.create_task(sample_rss(root_pid, stop))
        try:
            outcomes = await open_loop(client, make_body, rate_per_s=rate_per_s, duration_s=duration_s, timeout_s=timeout_s, seed=seed)
        finally:
            stop.set()
        return outcomes, await sampler


def recovery_probe(base_url: str, model: str, *, timeout_s: float = 60) -> tuple[int, float]:
    """One normal request after a disturbance: (status, seconds)."""
    started = time.monotonic()
    response = httpx.post(f"{base_url}/v1/completions", json={"model": model, "prompt": "ok", "max_tokens": 4}, timeout=timeout_s)
    return response.status_code, time.monotonic() - started
