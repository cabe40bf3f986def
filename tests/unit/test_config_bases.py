"""Several base models in one config: a `models:` list whose per-base sections are merged
over the fleet-wide ones, today's single `model:` read as a one-element list, and the
checks that make a name mean one base and a replica's GPUs one engine."""

from __future__ import annotations

import pytest

from deployments.config import ENGINE_DEPLOYMENT, ConfigError, LorafleetConfig, parse_config

STORE = {"uri": "/adapters"}


def two_bases(**second) -> dict:
    return {
        "models": [
            {"source": "/models/llama-8b", "served_name": "llama-8b"},
            {"source": "s3://models/llama-70b/", "served_name": "Llama-70B/Instruct", **second},
        ],
        "engine": {"max_loras": 4, "max_cpu_loras": 8, "max_model_len": 4096},
        "deployment": {"num_replicas": 3, "replica_cpus": 2},
        "adapters": STORE,
    }


def test_a_single_model_config_is_read_as_a_one_element_models_list():
    config = parse_config({"model": {"source": "/m", "served_name": "base"}, "adapters": STORE})
    assert config.served_names == ("base",)
    assert config.model.served_name == "base"
    assert config.for_base("base") is config  # nothing to merge: the view is the config
    assert "models" in config.model_dump() and "model" not in config.model_dump()


def test_a_single_model_configs_errors_name_the_fields_as_the_file_does():
    with pytest.raises(ConfigError) as err:
        parse_config({"model": {"source": "/m", "served_name": "bad name!"}, "adapters": STORE})
    assert "  model.served_name:" in str(err.value)


def test_model_and_models_together_are_refused():
    with pytest.raises(ConfigError, match="either `model:`"):
        parse_config({"model": {"source": "/m", "served_name": "a"}, "models": [], "adapters": STORE})


def test_a_bases_sections_are_deep_merged_over_the_fleet_wide_ones():
    config = parse_config(two_bases(
        engine={"max_loras": 8, "max_cpu_loras": 32},
        deployment={"num_replicas": 1, "replica_gpus": 4},
        routing={"settings": {"sample_k": 12}},
        placement={"enabled": False},
    ))
    small, large = config.for_base("llama-8b"), config.for_base("Llama-70B/Instruct")
    assert (small.engine.max_loras, small.deployment.num_replicas, small.placement.enabled) == (4, 3, True)
    assert (large.engine.max_loras, large.engine.max_cpu_loras, large.engine.max_model_len) == (8, 32, 4096)
    assert (large.deployment.num_replicas, large.deployment.replica_cpus, large.deployment.replica_gpus) == (1, 2, 4)
    assert large.routing.settings.sample_k == 12 and large.routing.policy == config.routing.policy
    assert large.placement.enabled is False
    assert large.served_names == ("Llama-70B/Instruct",) and large.model.source == "s3://models/llama-70b/"


def test_a_dumped_multi_base_config_reads_back_the_same_including_overrides_to_null():
    config = parse_config(two_bases(deployment={"max_ongoing_requests": None, "num_replicas": 1}))
    again = LorafleetConfig.model_validate(config.model_dump(mode="json"))
    assert again == config
    assert again.for_base("Llama-70B/Instruct").deployment.num_replicas == 1
    # An override dumps only what it sets: the fleet-wide values stay the fleet's.
    assert config.model_dump()["models"][1]["deployment"] == {"max_ongoing_requests": None, "num_replicas": 1}


def test_engine_deployments_keep_the_first_bases_name_and_slug_the_others():
    config = parse_config(two_bases())
    assert config.engine_deployment_name("llama-8b") == ENGINE_DEPLOYMENT == "EngineReplica"
    assert config.engine_deployment_name("Llama-70B/Instruct") == "EngineReplica-llama-70b-instruct"


@pytest.mark.parametrize("patch, message", [
    ({"served_name": "llama-8b"}, "names two bases"),
    ({"aliases": ["llama-8b"]}, "names two bases"),
    ({"served_name": "LLAMA.8B"}, "same deployment name suffix"),
    ({"engine": {"max_lora": 8}}, "models.1.engine.max_lora"),
    ({"engine": {"max_loras": 16}}, "models.1.engine"),  # merged: max_cpu_loras 8 < 16
    ({"deployment": {"ingress_replicas": 2}}, "describe(s) the whole fleet"),
    ({"deployment": {"replica_gpus": 2.5}}, "models.1.deployment.replica_gpus"),
    ({"routing": {"policy": "nonsense"}}, "models.1.routing.policy"),
])
def test_bad_bases_are_refused_naming_the_field(patch, message):
    with pytest.raises(ConfigError) as err:
        parse_config(two_bases(**patch))
    assert message in str(err.value)


def test_an_empty_models_list_is_refused():
    with pytest.raises(ConfigError, match="at least one base"):
        parse_config({"models": [], "adapters": STORE})


def test_a_multi_base_config_has_no_single_model_to_hand_out():
    with pytest.raises(ConfigError, match="serves 2 base models"):
        parse_config(two_bases()).model  # noqa: B018 - the property raises


@pytest.mark.parametrize("deployment, engine, tp", [
    ({"replica_gpus": 4}, {}, 4),
    ({"replica_gpus": 8}, {"pipeline_parallel_size": 2}, 4),
    ({"replica_gpus": 1}, {}, 1),
    ({"replica_gpus": 0.5}, {}, 1),
    ({"replica_gpus": 0}, {}, 1),
])
def test_tensor_parallel_size_follows_the_replicas_gpus(deployment, engine, tp):
    config = parse_config({"model": {"source": "/m", "served_name": "m"}, "deployment": deployment, "engine": engine,
                           "adapters": STORE})
    assert config.tensor_parallel_size() == tp


@pytest.mark.parametrize("deployment, engine, message", [
    ({"replica_gpus": 3}, {"tensor_parallel_size": 2}, "must equal engine.tensor_parallel_size x"),
    ({"replica_gpus": 0}, {"tensor_parallel_size": 2}, "needs that many GPUs"),
    ({"replica_gpus": 1}, {"pipeline_parallel_size": 2}, "needs that many GPUs"),
    ({"replica_gpus": 2.5}, {}, "whole number"),
])
def test_gpus_that_do_not_make_one_parallel_engine_are_refused(deployment, engine, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_config({"model": {"source": "/m", "served_name": "m"}, "deployment": deployment, "engine": engine,
                      "adapters": STORE})
    assert "deployment.replica_gpus" in str(err.value)
