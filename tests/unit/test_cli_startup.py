"""The start-up lines of `lorafleet serve`: each engine replica as it becomes ready, and
for replicas still starting, which and why (resources named), without repeating itself."""

from types import SimpleNamespace

from deployments.cli.resources import Ask
from deployments.cli.startup import StartupWatch

ASKS = (Ask("EngineReplica", 2, 1.0), Ask("Ingress", 1, 0.1))


class Lines:
    def __init__(self):
        self.lines = []

    def step(self, message):
        self.lines.append(message)


def _app(engine: dict, ingress: dict | None = None, message: str = "") -> dict:
    deployments = {"EngineReplica": SimpleNamespace(replica_states=engine, message=message)}
    if ingress is not None:
        deployments["Ingress"] = SimpleNamespace(replica_states=ingress, message="")
    return {"deployments": deployments}


def _watch(free=None):
    clock = SimpleNamespace(now=0.0)
    console = Lines()
    watch = StartupWatch(console, ASKS, 2, free_resources=lambda: free or {"CPU": 2.0}, clock=lambda: clock.now)
    return watch, console, clock


def test_each_engine_replica_is_announced_once_as_it_becomes_ready():
    watch, console, clock = _watch()
    clock.now = 20.0
    watch.update(_app({"RUNNING": 1, "STARTING": 1}))
    clock.now = 25.0
    watch.update(_app({"RUNNING": 1, "STARTING": 1}))
    clock.now = 30.0
    watch.update(_app({"RUNNING": 2}))
    ready = [line for line in console.lines if "ready" in line]
    assert ready == ["engine replica 1/2 ready (20 s after deploying)", "engine replica 2/2 ready (30 s after deploying)"]


def test_a_replica_waiting_for_cpus_is_named_with_its_ask_and_what_is_free():
    watch, console, clock = _watch(free={"CPU": 0.0})
    clock.now = 10.0
    watch.update(_app({"STARTING": 1, "RUNNING": 1}))
    assert console.lines == [line for line in console.lines if "ready" in line]  # nothing said before 15 s
    clock.now = 16.0
    watch.update(_app({"STARTING": 1, "RUNNING": 1}))
    assert console.lines[-1] == ("EngineReplica: 1 replica(s) 16 s after deploying: pending: waiting for resources: "
                                 "each asks 1 CPU, the cluster has 0 CPU free")


def test_a_slow_start_with_resources_free_says_the_engine_is_starting_and_does_not_repeat_within_a_minute():
    watch, console, clock = _watch()
    for t in (16.0, 20.0, 40.0, 70.0):
        clock.now = t
        watch.update(_app({"STARTING": 2}))
    assert len(console.lines) == 1 and "starting (importing vLLM" in console.lines[0]
    clock.now = 80.0
    watch.update(_app({"STARTING": 2}))
    assert len(console.lines) == 2  # a minute later, said again


def test_serves_own_scheduling_message_is_passed_on():
    watch, console, clock = _watch()
    clock.now = 31.0
    watch.update(_app({"RUNNING": 2}, ingress={"STARTING": 1}))
    assert console.lines[-1] == "Ingress: 1 replica(s) 31 s after deploying: starting"
    watch.update({"deployments": {"Ingress": SimpleNamespace(
        replica_states={"STARTING": 1}, message="1 replica has taken more than 30s to be scheduled")}})
    assert console.lines[-1].startswith("Ingress: 1 replica(s) 31 s after deploying: pending: 1 replica has taken")
