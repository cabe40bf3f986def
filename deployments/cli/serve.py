"""`lorafleet serve`: start (or join) a Ray cluster, deploy the fleet, show it, stop it.

    lorafleet serve --config FILE [--host H] [--port P] [--metrics-port M] [--demo]
                    [--verbose | --log-level LEVEL] [--start-timeout S]

What the terminal shows (deployments/cli/console.py), in order: where the logs go,
each start-up step with the time since start (Ray, the resource check, each engine
replica as it becomes ready, or which are pending and why, the adapters being
loaded), the banner with ready-to-paste examples, then one status line. Ray's,
Serve's and vLLM's logs go to the log folder (deployments/cli/logs.py); `--verbose`
brings them back.

A fleet that cannot be scheduled is refused before anything is deployed
(deployments/cli/resources.py). SIGINT or SIGTERM stops it: the demo build at once,
then Serve (each replica drains its in-flight requests for up to
`deployment.drain_timeout_s`), then Ray, saying what is stopping; no Ray or vLLM
process is left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from deployments.cli.banner import ready_message
from deployments.cli.console import Console
from deployments.cli.demo import DemoError, DemoRun
from deployments.cli.fleet import (
    Deploy,
    Fleet,
    cluster_capacity,
    quiet_driver_output,
    session_log_folder,
    wait_for_placement,
    wait_until_serving,
)
from deployments.cli.startup import StartupWatch
from deployments.config import ConfigError, LorafleetConfig, load_config

# Quiet, offline-friendly defaults for everything this process (and Ray workers it
# starts) imports; set before transformers/vLLM are imported.
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}
STATUS_PERIOD_S = 1.0
ERRORS_PERIOD_S = 5.0  # Ray's metrics endpoint is refreshed every ~10 s: reading it more often buys nothing


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="start (or join RAY_ADDRESS) a Ray cluster and serve the OpenAI API")
    p.add_argument("--config", required=True, help="YAML config (see configs/default.yaml)")
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.add_argument("--metrics-port", type=int, help="override server.metrics_port (Ray's Prometheus endpoint)")
    p.add_argument("--demo", action="store_true",
                   help="serve the demo: build its assets if needed (adapters train while the base model is served, "
                        "each published as it finishes) and print one example per demo adapter")
    p.add_argument("--verbose", action="store_true", help="show Ray's, Serve's and vLLM's logs on the terminal too")
    p.add_argument("--log-level", help="like --verbose, at this level (DEBUG, INFO, WARNING, ERROR)")
    p.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for the fleet to serve (default 600)")
    p.set_defaults(func=cmd_serve)


# ---------------------------------------------------------------- checks before starting


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _load(args) -> LorafleetConfig | str:
    """The config, or the message to exit 2 with."""
    try:
        config = load_config(args.config).with_overrides(host=args.host, port=args.port, metrics_port=args.metrics_port)
    except ConfigError as err:
        return str(err)
    for m in config.models:
        if not args.demo and Path(m.source).is_absolute() and not Path(m.source).exists():
            return f"base model folder {m.source} does not exist (run `lorafleet demo-assets`, or serve with --demo)"
    if not _port_free(config.server.host, config.server.port):
        return f"{config.server.host}:{config.server.port} is already in use; pick another with --port"
    usage = config.server.usage
    if (usage.enabled and usage.backend == "postgres" and not os.environ.get("RAY_ADDRESS")
            and not os.environ.get(usage.postgres_dsn_env, "").strip()):
        # A local cluster's workers inherit this environment: without the DSN no ingress could start.
        return (f"server.usage.backend is postgres but the environment variable {usage.postgres_dsn_env} "
                "(server.usage.postgres_dsn_env) is not set; export it with the database's DSN")
    return config


# ---------------------------------------------------------------- the command


def cmd_serve(args: argparse.Namespace) -> int:
    from deployments.cli.logs import DriverLog, parse_level

    loaded = _load(args)
    if isinstance(loaded, str):
        print(f"lorafleet: {loaded}", file=sys.stderr)
        return 2
    config = loaded
    try:
        terminal_level = parse_level(args.log_level, args.verbose)
    except ValueError as err:
        print(f"lorafleet: {err}", file=sys.stderr)
        return 2
    console = Console()
    for warning in config.batching_warnings():  # the log folder is not there yet: say it here
        print(f"lorafleet: warning: {warning}", file=sys.stderr)
    try:
        demo = DemoRun(config, console) if args.demo else None
    except (DemoError, ConfigError) as err:  # ConfigError: --demo with a config of several bases
        print(f"lorafleet: {err}", file=sys.stderr)
        return 2
    # A local cluster opens Ray's metrics endpoint at server.metrics_port (on all
    # interfaces unless the node's address is loopback: Ray's choice); a joined cluster
    # keeps the port its nodes were started with.
    joining = bool(os.environ.get("RAY_ADDRESS"))
    metrics_port = None if joining else config.server.metrics_port
    if metrics_port is not None and not _port_free("0.0.0.0", metrics_port):
        print(f"lorafleet: metrics port {metrics_port} is already in use; pick another with --metrics-port", file=sys.stderr)
        return 2

    driver_log = DriverLog(terminal_level)
    verbose = terminal_level is not None
    if demo is not None:
        demo.start_build()  # pretraining overlaps Ray's start

    import ray

    driver_log.adopt_ray_loggers()  # `import ray` installed its terminal handler
    if not verbose:
        quiet_driver_output()
    console.step("joining the Ray cluster at $RAY_ADDRESS..." if joining else "starting Ray (a local cluster on this machine)...")
    stop = threading.Event()
    ready = threading.Event()
    try:
        # "local": a new cluster of our own. With None, Ray would join whatever cluster a
        # `ray start` on this machine last recorded in /tmp/ray/ray_current_cluster (and
        # hang retrying when that cluster is gone or wants another token).
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
                 configure_logging=False, log_to_driver=verbose,
                 runtime_env={"env_vars": QUIET_ENV},
                 **({"_metrics_export_port": metrics_port} if metrics_port is not None else {}))
    except KeyboardInterrupt:
        if demo is not None:
            demo.stop()
        ray.shutdown()
        return 130
    log_folder = session_log_folder()
    driver_log.attach(log_folder)
    if demo is not None and demo.build is not None:
        demo.build.attach_log(log_folder / "demo-build.log")
    where = "this node's; every node keeps its own" if joining else "Ray, Serve, engines and vLLM"
    console.step(f"logs: {log_folder} ({where}; --verbose shows them here)")

    # After ray.init: Ray installs its own fatal-signal handlers, ours must win so
    # SIGTERM (Kubernetes, CI, Ctrl-C) takes the clean shutdown path below.
    def on_signal(*_):
        # Before the fleet serves, interrupt a blocking start-up call at once; after,
        # let the main loop leave normally. Either way the `finally` below cleans up.
        first = not stop.is_set()
        stop.set()
        if not ready.is_set() and first:
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    code = 0
    try:
        code = _serve(config, args, console, driver_log, demo, stop, ready, metrics_port, log_folder)
    except KeyboardInterrupt:
        code = 130
    finally:
        code = _shutdown(console, demo, config, code)
    return code


def _serve(config, args, console, driver_log, demo, stop, ready, metrics_port, log_folder) -> int:
    import ray
    from ray import serve

    from deployments.app import APP_NAME, build_app
    from deployments.cli.resources import check_fit, fleet_asks

    driver_log.adopt_ray_loggers()  # importing Serve installed its terminal handler
    asks = fleet_asks(config)
    fit = check_fit(asks, cluster_capacity())
    if not fit.fits:
        console.say(f"lorafleet: {fit.message()}")
        return 1
    cpus = ray.cluster_resources().get("CPU", 0.0)
    console.step(f"Ray is up ({cpus:g} CPUs); the fleet asks "
                 + ", ".join(f"{a.replicas} x {a.deployment} ({a.per_replica()})" for a in asks if a.replicas)
                 + (" and fits only once the autoscaler adds nodes" if fit.needs_autoscaling else ": it fits"))
    serve.start(http_options={"host": config.server.host, "port": config.server.port,
                              "request_timeout_s": config.server.request_timeout_s})
    driver_log.adopt_ray_loggers()  # Serve configured its logger again
    if demo is not None:
        failed = demo.wait_base(stop)
        if failed:
            console.say(f"lorafleet: {failed}")
            return 1
    n = sum(view.deployment.num_replicas for view in config.bases().values())
    console.step(f"starting {n} engine replica{'s' if n != 1 else ''} (vLLM, {', '.join(config.served_names)})...")
    deploy = Deploy(build_app(config), APP_NAME)
    fleet = Fleet(config, metrics_port)
    watch = StartupWatch(console, asks, n, free_resources=ray.available_resources)
    failed = wait_until_serving(fleet, console, watch, stop, args.start_timeout, deploy)
    if failed:
        console.clear_status()
        if failed == "interrupted":
            return 130
        console.say(f"lorafleet: {failed} (logs: {log_folder})")
        return 1
    if config.placement.enabled:
        wait_for_placement(fleet, console, stop, config.placement.settings.period_s)
    ready.set()
    console.clear_status()
    console.say(ready_message(config, fleet.first_adapter(), fleet.metrics_url, log_folder))
    if demo is not None:
        demo.after_ready(fleet)
    _run_status(fleet, console, demo, stop)
    return 0


def _run_status(fleet: Fleet, console: Console, demo, stop: threading.Event) -> None:
    """Until stopped: the status line, and the demo's publications."""
    from deployments.cli.status import sample_from_replicas, status_line

    previous, errors, errors_at = None, None, 0.0
    while not stop.wait(STATUS_PERIOD_S):
        if demo is not None:
            try:
                demo.poll(fleet)
            except Exception as err:  # noqa: BLE001 - a failed publication must not stop the server
                console.step(f"demo: {err}")
        if time.monotonic() - errors_at > ERRORS_PERIOD_S:
            errors, errors_at = fleet.errors(), time.monotonic()
        try:
            current = sample_from_replicas(fleet.replicas(), time.monotonic(), errors)
        except Exception:  # noqa: BLE001 - the controller restarting: keep the last line
            continue
        extra = demo.progress() if demo is not None else ""
        console.status(status_line(previous, current, extra), key=f"{current.requests}/{current.errors}/{extra}")
        previous = current


def _shutdown(console: Console, demo, config, code: int) -> int:
    """Stop in the order that loses the least: the demo build (resumable), then the
    application (each replica stops taking requests and finishes those in flight, for
    at most `deployment.drain_timeout_s`, while the HTTP proxy still carries their
    responses), then Serve's proxy and controller, then Ray."""
    import ray
    from ray import serve

    from deployments.app import APP_NAME

    started = time.monotonic()
    console.clear_status()
    console.step("stopping (Ctrl-C or SIGTERM)..." if code in (0, 130) else "stopping...")
    if demo is not None:
        demo.stop()
    drain = config.deployment.drain_timeout_s
    try:
        if ray.is_initialized():
            console.step(f"stopping the fleet: replicas finish their in-flight requests (at most {drain:g} s), "
                         "then the engines stop...")
            at = time.monotonic()
            try:
                serve.delete(APP_NAME)
            except Exception:  # noqa: BLE001 - nothing deployed yet, or Serve not started
                pass
            console.step(f"fleet stopped in {time.monotonic() - at:.1f} s; stopping Serve and Ray...")
            serve.shutdown()
    except Exception as err:  # noqa: BLE001 - Ray is going down anyway
        console.step(f"Serve did not stop cleanly ({err}); stopping Ray")
    finally:
        ray.shutdown()
    console.step(f"stopped in {time.monotonic() - started:.1f} s")
    return code
