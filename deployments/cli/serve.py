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

from deployments.cli.console import Console
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
CONTROLLER = "FleetController"
STATUS_PERIOD_S = 1.0
ERRORS_PERIOD_S = 5.0  # Ray's metrics endpoint is refreshed every ~10 s: reading it more often buys nothing
ADAPTER_WAIT_S = 15.0  # longest the start waits for replicas to hold their planned adapters


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
    if not args.demo and Path(config.model.source).is_absolute() and not Path(config.model.source).exists():
        return f"base model folder {config.model.source} does not exist (run `lorafleet demo-assets`, or serve with --demo)"
    if not _port_free(config.server.host, config.server.port):
        return f"{config.server.host}:{config.server.port} is already in use; pick another with --port"
    return config


# ---------------------------------------------------------------- the banner


def ready_message(config: LorafleetConfig, adapter: str | None, metrics_url: str | None = None,
                  log_folder: Path | None = None) -> str:
    url = f"http://{config.server.host}:{config.server.port}"
    model = adapter or config.model.served_name
    extra = ""
    if metrics_url:
        extra += f"  Prometheus metrics (lorafleet's, Ray's, Ray Serve's): {metrics_url}\n"
    extra += f"  a live view of the fleet:  lorafleet top --url {url}\n"
    if log_folder:
        extra += f"  logs (Ray, Serve, vLLM):   {log_folder}\n"
    return f"""
lorafleet is serving {config.model.served_name} on {url}  (Ctrl-C to stop)

  curl {url}/v1/models
  curl {url}/v1/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "{model}", "prompt": "Hello", "max_tokens": 16}}'

  python - <<'EOF'
from openai import OpenAI
client = OpenAI(base_url="{url}/v1", api_key="unused")
print(client.chat.completions.create(model="{model}", max_tokens=16,
      messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)
EOF

{extra}"""


# ---------------------------------------------------------------- the Ray side


class Fleet:
    """What the command asks of the running fleet: Serve's status, the controller's
    view of the replicas (through its Serve handle: no HTTP, no API key), the health
    and registry endpoints, and Ray's metrics endpoint for the error count."""

    def __init__(self, config: LorafleetConfig, metrics_port: int | None):
        self.config = config
        self.base_url = f"http://{config.server.host}:{config.server.port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port is not None else None
        self._controller = None

    def deployments(self) -> dict:
        from ray import serve

        from deployments.app import APP_NAME

        app = serve.status().applications.get(APP_NAME)
        return {} if app is None else {"status": app.status, "message": app.message, "deployments": app.deployments}

    def replicas(self) -> list[dict]:
        from ray import serve

        from deployments.app import APP_NAME

        if self._controller is None:
            self._controller = serve.get_deployment_handle(CONTROLLER, app_name=APP_NAME)
        return self._controller.snapshot.remote().result(timeout_s=10)

    def plans(self) -> int:
        """Placement passes the controller has made (0: no plan yet)."""
        return int(self._controller.placement.remote().result(timeout_s=10).get("plans", 0))

    def healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.base_url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def errors(self) -> int | None:
        import httpx

        from deployments.cli.status import errors_from_metrics

        if self.metrics_url is None:
            return None
        try:
            text = httpx.get(self.metrics_url, timeout=5).text
        except httpx.HTTPError:
            return None
        wanted = "\n".join(line for line in text.splitlines() if "lorafleet_requests_total" in line)
        return errors_from_metrics(wanted + "\n")

    def first_adapter(self) -> str | None:
        import httpx

        try:
            response = httpx.get(f"{self.base_url}/v1/models", timeout=10)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:  # 401 with auth on: the banner names the base model
            return None
        adapters = [m["id"] for m in response.json()["data"] if m.get("parent")]
        return adapters[0] if adapters else None


def cluster_capacity():
    """The cluster's nodes now and, on an autoscaling cluster, its node groups."""
    import ray

    from deployments.cli.resources import Capacity, NodeGroup

    nodes = tuple((float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
                  for n in ray.nodes() if n.get("Alive"))
    groups = ()
    try:  # the autoscaler's node groups (KubeRay publishes them); absent on a plain cluster
        from ray._private.state import state

        config = state.get_cluster_config()
        if config is not None:
            groups = tuple(NodeGroup(float(g.resources.get("CPU", 0)), float(g.resources.get("GPU", 0)), int(g.max_count))
                           for g in config.node_group_configs)
    except Exception:  # noqa: BLE001 - a private API: without it, the nodes there are now decide
        groups = ()
    return Capacity(nodes, groups)


def quiet_driver_output() -> None:
    """Ray prints what the cluster reports to this driver (task retries, \"(raylet)\"
    messages) straight to the terminal, whatever `log_to_driver` says; the switch Ray's
    own debugger uses turns that off. The same messages are in the log folder
    (python-core-driver-*.log, raylet.out)."""
    import ray._private.worker as ray_worker

    if hasattr(ray_worker, "_worker_logs_enabled"):
        ray_worker._worker_logs_enabled = False


def session_log_folder() -> Path:
    import ray

    return Path(ray._private.worker.global_worker.node.get_logs_dir_path())


# ---------------------------------------------------------------- start-up progress


class Deploy:
    """`serve.run` in a thread: it returns only once every replica runs, and the start-up
    progress is read from Serve's status meanwhile."""

    def __init__(self, app, name: str):
        from ray import serve

        self.error: BaseException | None = None

        def run() -> None:
            try:
                serve.run(app, name=name, route_prefix="/", blocking=False)
            except BaseException as err:  # noqa: BLE001 - reported by the waiting loop
                self.error = err

        threading.Thread(target=run, name="serve-run", daemon=True).start()


def _wait_until_serving(fleet: Fleet, console: Console, watch: StartupWatch, stop: threading.Event,
                        timeout_s: float, deploy: Deploy) -> str | None:
    """Wait for every replica and a healthy ingress; None when serving, else why not."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        if deploy.error is not None:
            return f"the deployment failed: {deploy.error}"
        app = fleet.deployments()
        watch.update(app)
        status = str(getattr(app.get("status"), "value", app.get("status")))
        if status == "DEPLOY_FAILED":
            return f"the deployment failed: {app.get('message') or 'see the logs'}"
        if status == "RUNNING" and fleet.healthy():
            return None
        if time.monotonic() > deadline:
            return f"the fleet was not serving after {timeout_s:.0f} s (--start-timeout)"
        console.status(f"starting: {watch.ready}/{watch.num_replicas} engine replicas ready · "
                       f"{console.elapsed():.0f} s", transient=True)
        stop.wait(0.5)
    return "interrupted"


def _wait_for_placement(fleet: Fleet, console: Console, stop: threading.Event, period_s: float) -> None:
    """Until every replica holds the adapters placement wants there. Bounded: the first
    plan comes within a placement period, and with no demand yet it may place nothing."""
    started = time.monotonic()
    announced = False
    while not stop.is_set() and time.monotonic() - started < ADAPTER_WAIT_S:
        try:
            replicas = fleet.replicas()
        except Exception:  # noqa: BLE001 - the controller may still be starting
            replicas = []
        wanted = sum(len(r.get("desired", ())) for r in replicas)
        held = sum(len(set(r.get("desired", ())) & (set(r.get("gpu_resident", ())) | set(r.get("cpu_resident", ()))))
                   for r in replicas)
        if wanted and not announced:
            console.step(f"loading adapters: the placement controller put {wanted} on {len(replicas)} replica(s)...")
            announced = True
        if wanted and held >= wanted:
            console.step(f"adapters loaded: {held}/{wanted} resident where placement wants them")
            return
        if not wanted and replicas and fleet.plans() > 0:
            return  # the plan places nothing yet (no demand so far): nothing to wait for
        if not wanted and time.monotonic() - started > period_s + 2:
            return  # no plan within a period: do not hold the banner back
        console.status(f"loading adapters: {held}/{wanted} resident", transient=True)
        stop.wait(0.5)


# ---------------------------------------------------------------- the demo


class DemoRun:
    """`--demo`: examples for the adapters there are, and the build of those missing."""

    def __init__(self, config: LorafleetConfig, console: Console):
        from deployments.cli.demo import demo_folder
        from factory.demo_assets import DEMO_ADAPTERS, is_complete

        self.config = config
        self.console = console
        self.folder = demo_folder(config)
        self.specs = {a.name: a for a in DEMO_ADAPTERS}
        self.complete = is_complete(self.folder)
        self.build = None
        self.published = 0
        self.to_publish = 0
        self.finished = False

    def start_build(self) -> None:
        from deployments.cli.demo import DemoBuild

        if self.complete:
            return
        self.build = DemoBuild(self.folder)
        self.build.start()

    def wait_base(self, stop: threading.Event) -> str | None:
        """Until the base model is ready; None when it is, else why not."""
        if self.build is None:
            return None
        self.console.step(f"building the demo base model in {self.folder} (pretraining, about a minute)...")
        started = time.monotonic()
        while not stop.is_set():
            event = self.build.next_event(0.5)
            if event is None:
                self.console.status(f"pretraining the demo base model · {time.monotonic() - started:.0f} s", transient=True)
                continue
            if event["event"] == "base":
                what = "built" if event["built"] else "found (from an earlier run)"
                self.console.step(f"demo base model {what} in {event['seconds']:.0f} s")
                return None
            if event["event"] == "exit":
                return f"the demo build failed (exit {event['code']}):\n{self.build.log_tail()}"
        return "interrupted"

    def after_ready(self, fleet: Fleet) -> None:
        """Examples for what is there; start training what is missing."""
        from deployments.cli.demo import published_names

        there = published_names(fleet.base_url) & set(self.specs)
        if self.build is None:
            self._examples(fleet, [self.specs[n] for n in self.specs if n in there], header=True)
            return
        missing = [n for n in self.specs if n not in there]
        self.to_publish = len(missing)
        if there:
            self._examples(fleet, [self.specs[n] for n in self.specs if n in there], header=True)
        self.console.say(f"  training the {len(missing)} demo adapters now (two at a time, 20-50 s each); each one is "
                         f"published to this fleet through the registry as it finishes, and its example printed:\n")
        self.build.train(missing)

    def poll(self, fleet: Fleet) -> None:
        """Publish what the build finished since the last call."""
        from deployments.cli.demo import publish, remove_staged
        from factory.demo_assets import mark_complete

        if self.build is None:
            return
        while (event := self.build.next_event(0)) is not None:
            if event["event"] == "adapter":
                name, folder = event["name"], Path(event["folder"])
                started = time.monotonic()
                publish(fleet.base_url, name, folder)
                remove_staged(folder)
                self.published += 1
                self.console.step(f"published {name} ({self.published}/{self.to_publish}): trained in "
                                  f"{event['seconds']:.0f} s, published in {time.monotonic() - started:.1f} s")
                self._examples(fleet, [self.specs[name]], header=False)
            elif event["event"] == "done":
                mark_complete(self.folder)
                self.finished = True
                self.console.step(f"every demo adapter is served; `lorafleet demo-examples --url {fleet.base_url}` "
                                  "shows them again")
            elif event["event"] == "exit":
                if event["code"] != 0:
                    self.console.step(f"the demo build stopped (exit {event['code']}); the fleet keeps serving what "
                                      f"is published:\n{self.build.log_tail()}")
                self.build = None
                return

    def progress(self) -> str:
        if self.build is None or not self.to_publish:
            return ""
        return f"demo adapters {self.published}/{self.to_publish} published"

    def _examples(self, fleet: Fleet, specs, header: bool) -> None:
        from factory.demo_examples import showcase

        if not specs:
            return
        try:
            lines = showcase(fleet.base_url, tuple(specs), self.config.model.served_name)
        except Exception as err:  # noqa: BLE001 - an example failing must not stop the server
            self.console.step(f"could not run the demo example(s): {err}")
            return
        if header:
            self.console.say(f"  demo skills (greedy; `lorafleet demo-examples --url {fleet.base_url}` shows them again):")
        self.console.say("\n".join(lines) + ("\n" if header else ""))

    def stop(self) -> None:
        if self.build is not None and self.build.process is not None and self.build.process.poll() is None:
            self.build.stop()
            if not self.finished:
                self.console.step("stopped the demo build (a later `make demo` trains what is missing)")


# ---------------------------------------------------------------- the command


def cmd_serve(args: argparse.Namespace) -> int:
    from deployments.cli.logs import DriverLog, parse_level
    from deployments.cli.demo import DemoError

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
    try:
        demo = DemoRun(config, console) if args.demo else None
    except DemoError as err:
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
    n = config.deployment.num_replicas
    console.step(f"starting {n} engine replica{'s' if n != 1 else ''} (vLLM, {config.model.served_name})...")
    deploy = Deploy(build_app(config), APP_NAME)
    fleet = Fleet(config, metrics_port)
    failed = _wait_until_serving(fleet, console, StartupWatch(console, asks, n, free_resources=ray.available_resources), stop, args.start_timeout, deploy)
    if failed:
        console.clear_status()
        if failed == "interrupted":
            return 130
        console.say(f"lorafleet: {failed} (logs: {log_folder})")
        return 1
    if config.placement.enabled:
        _wait_for_placement(fleet, console, stop, config.placement.settings.period_s)
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
