"""What `lorafleet serve` asks of Ray and of the fleet it deployed.

The Ray glue of the command, kept apart from what it shows: the cluster's nodes (for
the fit check), the log folder, deploying in the background, Serve's status, the fleet
controller's view of the replicas (through its Serve handle: no HTTP, no API key), the
health and model endpoints, and the error count from Ray's metrics endpoint; and the
two waits of the start-up (every replica running and /health answering; the planned
adapters resident).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from deployments.cli.console import Console
from deployments.cli.startup import StartupWatch
from deployments.config import LorafleetConfig

CONTROLLER = "FleetController"
ADAPTER_WAIT_S = 15.0  # longest the start waits for replicas to hold their planned adapters


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


def wait_until_serving(fleet: Fleet, console: Console, watch: StartupWatch, stop: threading.Event,
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


def wait_for_placement(fleet: Fleet, console: Console, stop: threading.Event, period_s: float) -> None:
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
