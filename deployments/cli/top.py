"""`lorafleet top`: a live view of a running fleet in the terminal (like `ray status`).

    lorafleet top [--url URL] [--api-key KEY] [--interval S] [--once] [--adapters N]

Per replica: its adapters by tier (GPU slots, host memory, loading), what the placement
plan wants there, queue and running requests, KV-cache use, requests and tokens per
second; per adapter: request rate, where it lives and where the plan wants it; the
placement actions seen between reads. It reads only the fleet's admin API
(`/fleet/replicas`, `/fleet/placement`, `/v1/adapters`: an admin key when auth is on),
so it works against any fleet it can reach, local or not. The rows are computed by
`deployments.cli.fleet_view` (pure); this module reads and draws them with `rich`.

`--once` reads twice, `--interval` apart (rates need two reads), prints one view and
exits: for scripts and tests. Exit codes as `lorafleet adapters`: 1 the fleet refused
or could not be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from deployments.cli.adapters import DEFAULT_URL
from deployments.cli.fleet_view import Action, FleetView, Snapshot, build_view


class TopError(Exception):
    pass


def add_parser(sub) -> None:
    p = sub.add_parser("top", help="a live view of a running fleet: replicas, adapters by tier, placement, rates")
    p.add_argument("--url", default=os.environ.get("LORAFLEET_URL", DEFAULT_URL),
                   help=f"the fleet's base URL (default $LORAFLEET_URL or {DEFAULT_URL})")
    p.add_argument("--api-key", default=os.environ.get("LORAFLEET_API_KEY"),
                   help="an admin key when the fleet requires keys (default $LORAFLEET_API_KEY)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between reads (default 2)")
    p.add_argument("--once", action="store_true", help="print one view (two reads, --interval apart) and exit")
    p.add_argument("--adapters", type=int, default=20, help="most adapter rows shown, busiest first (default 20)")
    p.set_defaults(func=run)


def read_snapshot(client) -> Snapshot:
    """One read of the three admin endpoints."""
    import httpx

    bodies = []
    for path in ("/fleet/replicas", "/fleet/placement", "/v1/adapters"):
        try:
            response = client.get(path)
        except httpx.HTTPError as err:
            raise TopError(f"cannot reach {client.base_url}: {err}") from None
        if response.status_code in (401, 403):
            raise TopError(f"{path}: {response.status_code}: the fleet needs an admin key (--api-key or $LORAFLEET_API_KEY)")
        if response.status_code != 200:
            raise TopError(f"{path}: {response.status_code}: {response.text[:300]}")
        bodies.append(response.json())
    return Snapshot(at=time.time(), replicas=bodies[0]["replicas"], placement=bodies[1], adapters=bodies[2]["data"])


def _short(text: str, n: int = 8) -> str:
    return text[:n] if text else "-"


def _names(names) -> str:
    return "\n".join(names) if names else "-"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(view: FleetView, url: str):
    """The view as `rich` renderables (a header, two tables, the actions)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    plans = "placement off" if view.plans is None else f"{view.plans} placement plans"
    header = Text(f"lorafleet top · {url} · {len(view.replicas)} replicas · {plans} · {time.strftime('%H:%M:%S')}",
                  style="bold")

    replicas = Table(title="replicas", title_justify="left", expand=False, show_lines=True)
    for column in ("replica", "node", "GPU slots", "host memory", "loading", "plan wants", "queue", "running",
                   "KV cache", "req/s", "tok/s"):
        replicas.add_column(column, justify="right" if column in ("queue", "running", "KV cache", "req/s", "tok/s") else "left")
    for r in view.replicas:
        held = set(r.gpu) | set(r.cpu) | set(r.loading)
        wants = [f"gpu {n}" + ("" if n in held else " (pending)") for n in r.planned_gpu]
        wants += [f"cpu {n}" + ("" if n in held else " (pending)") for n in r.planned_cpu]
        replicas.add_row(
            r.replica_id + ("" if r.healthy else " (unhealthy)"), _short(r.node_id),
            f"{_names(r.gpu)}\n({len(r.gpu)}/{r.gpu_slots})",
            f"{_names(r.cpu)}\n({len(r.cpu) + len(r.gpu)}/{r.cpu_slots})",
            _names(r.loading), _names(wants),
            str(r.queued), str(r.running), f"{r.kv_cache_usage:.0%}",
            _rate(r.requests_per_s), _rate(r.tokens_per_s),
        )

    adapters = Table(title="adapters", title_justify="left", expand=False)
    for column in ("adapter", "req/s", "lives on", "plan wants it on"):
        adapters.add_column(column, justify="right" if column == "req/s" else "left")
    if view.base_requests_per_s is not None:
        adapters.add_row("(base model)", _rate(view.base_requests_per_s), "every replica", "-")
    for a in view.adapters:
        lives = ", ".join(f"{rid}:{tier}" for rid, tier in a.where) or "store only"
        name = a.name if a.servable else f"{a.name} (refused)"
        adapters.add_row(name, _rate(a.requests_per_s), lives, ", ".join(a.planned) or "-")
    parts = [header, replicas, adapters]
    if view.hidden_adapters:
        parts.append(Text(f"... and {view.hidden_adapters} more adapters (--adapters N shows more)"))
    parts.append(Text("recent placement actions (residency changes seen between reads):", style="bold"))
    if view.actions:
        for action in view.actions:
            parts.append(Text(f"  {time.strftime('%H:%M:%S', time.localtime(action.at))}  {action.replica_id}  "
                              f"{action.adapter}  {action.change}"))
    else:
        parts.append(Text("  none seen yet"))
    return Group(*parts)


def _console():
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    # Piped (scripts, tests): plain text, wide enough that rows do not fold adapter names.
    return Console(width=int(os.environ.get("COLUMNS", "0")) or 200, color_system=None, force_terminal=False)


def run(args: argparse.Namespace) -> int:
    import httpx

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    console = _console()
    try:
        with httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=30) as client:
            previous = read_snapshot(client)
            if args.once:
                time.sleep(args.interval)
                console.print(render(build_view(previous, read_snapshot(client), max_adapters=args.adapters), args.url))
                return 0
            return _live(client, console, previous, args)
    except TopError as err:
        print(f"lorafleet top: {err}", file=sys.stderr)
        return 1


def _live(client, console, previous: Snapshot, args) -> int:
    from rich.live import Live

    history: tuple[Action, ...] = ()
    view = build_view(None, previous, max_adapters=args.adapters)
    try:
        with Live(render(view, args.url), console=console, auto_refresh=False, screen=console.is_terminal) as live:
            while True:
                time.sleep(args.interval)
                current = read_snapshot(client)
                view = build_view(previous, current, max_adapters=args.adapters, history=history)
                history, previous = view.actions, current
                live.update(render(view, args.url), refresh=True)
    except KeyboardInterrupt:
        return 0
