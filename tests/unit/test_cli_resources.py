"""The fleet-fits-the-cluster arithmetic behind `lorafleet serve`'s start-up check."""

from deployments.cli.resources import UNBOUNDED, Ask, Capacity, NodeGroup, check_fit, fleet_asks, shortfall
from deployments.config import parse_config


def _config(**deployment):
    return parse_config({"model": {"source": "/m", "served_name": "m"}, "adapters": {"uri": "/a"},
                         "deployment": deployment})


def test_two_one_cpu_engines_and_an_ingress_do_not_fit_two_cpus_and_the_message_names_them():
    """The issue's case: the engines took both CPUs and the ingress could never start."""
    report = check_fit(fleet_asks(_config(num_replicas=2, replica_cpus=1)), Capacity(nodes=((2.0, 0.0),)))
    assert not report.fits
    assert report.unplaced == {"Ingress": 1}
    message = report.message()
    assert "EngineReplica asks 2 x 1 CPU" in message
    assert "Ingress asks 1 x 0.1 CPU" in message
    assert "in all 2.1 CPU; the cluster has 2 CPU on 1 node(s): 2 CPU" in message
    assert "Ingress: 1 of 1 replica(s) would never be scheduled" in message
    assert "deployment.replica_cpus" in message


def test_the_default_demo_fleet_fits_a_two_cpu_machine():
    assert check_fit(fleet_asks(_config(num_replicas=2, replica_cpus=0.5)), Capacity(nodes=((2.0, 0.0),))).fits


def test_tenths_of_a_cpu_that_add_up_exactly_fit_despite_float_error():
    asks = (Ask("A", 7, 0.1), Ask("B", 3, 0.1))
    assert check_fit(asks, Capacity(nodes=((1.0, 0.0),))).fits


def test_a_replica_must_fit_on_one_node_not_in_the_cluster_sum():
    """Two 1-CPU nodes have 2 CPUs, but no node has room for a 1.5-CPU replica."""
    report = check_fit((Ask("EngineReplica", 1, 1.5),), Capacity(nodes=((1.0, 0.0), (1.0, 0.0))))
    assert report.unplaced == {"EngineReplica": 1}


def test_gpu_replicas_need_a_node_with_gpus():
    asks = (Ask("EngineReplica", 2, 1, 1), Ask("Ingress", 1, 0.5))
    assert check_fit(asks, Capacity(nodes=((8.0, 0.0), (8.0, 2.0)))).fits
    report = check_fit(asks, Capacity(nodes=((8.0, 0.0), (8.0, 1.0))))
    assert report.unplaced == {"EngineReplica": 1}
    assert "1 CPU + 1 GPU" in report.message()


def test_a_fleet_that_fits_once_the_autoscaler_adds_nodes_is_pending_not_refused():
    asks = (Ask("EngineReplica", 4, 1, 1),)
    capacity = Capacity(nodes=((4.0, 0.0),), groups=(NodeGroup(8, 1, max_count=4),))
    report = check_fit(asks, capacity)
    assert report.fits and report.needs_autoscaling


def test_a_fleet_larger_than_the_autoscaler_may_ever_run_is_refused():
    asks = (Ask("EngineReplica", 5, 1, 1),)
    capacity = Capacity(nodes=((4.0, 0.0),), groups=(NodeGroup(8, 1, max_count=4),))
    report = check_fit(asks, capacity)
    assert not report.fits
    assert "its autoscaler can add at most: 4 x 8 CPU + 1 GPU node(s)" in report.message()


def test_an_unbounded_node_group_fits_any_count_of_replicas_that_fit_one_node():
    capacity = Capacity(nodes=(), groups=(NodeGroup(8, 1, max_count=UNBOUNDED),))
    assert check_fit((Ask("EngineReplica", 50, 1, 1),), capacity).fits
    assert not check_fit((Ask("EngineReplica", 1, 1, 2),), capacity).fits


def test_shortfall_says_what_a_pending_replica_asks_and_what_is_free():
    ask = Ask("EngineReplica", 2, 1.0)
    assert shortfall(ask, free_cpus=0.5, free_gpus=0) == "each asks 1 CPU, the cluster has 0.5 CPU free"
    assert shortfall(ask, free_cpus=1.0, free_gpus=0) is None
