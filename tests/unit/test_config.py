"""The config schema: a bad config fails at start with the field path and the reason."""

from pathlib import Path

import pytest

from deployments.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"model": {"source": "/models/base", "served_name": "base"}, "adapters": {"uri": "/adapters"}}


@pytest.mark.parametrize("name", ["default.yaml", "two-bases.yaml", "gpu-example.yaml", "postgres-example.yaml"])
def test_shipped_configs_load(name):
    config = load_config(REPO / "configs" / name)
    assert config.engine.max_cpu_loras >= config.engine.max_loras
    assert "lm_head" not in config.engine.lora_target_modules


def test_relative_paths_resolve_against_the_config_file():
    config = load_config(REPO / "configs" / "default.yaml")
    assert config.model.source == str((REPO / ".demo-assets" / "base").resolve())
    assert config.adapters.uri == str((REPO / ".demo-assets" / "adapters").resolve())


def test_hub_ids_are_left_alone(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "model: {source: meta-llama/Llama-3.1-8B, served_name: llama}\nadapters: {uri: s3://bucket/adapters}\n"
    )
    config = load_config(tmp_path / "c.yaml")
    assert config.model.source == "meta-llama/Llama-3.1-8B"
    assert config.adapters.uri == "s3://bucket/adapters"


@pytest.mark.parametrize(
    "patch, path_in_message",
    [
        ({"engine": {"max_lora": 4}}, "engine.max_lora"),  # typo: unknown key
        ({"engine": {"max_loras": 0}}, "engine.max_loras"),
        ({"engine": {"max_loras": "many"}}, "engine.max_loras"),
        ({"engine": {"max_lora_rank": 12}}, "engine.max_lora_rank"),
        ({"deployment": {"num_replicas": -1}}, "deployment.num_replicas"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"model": {"source": "/m", "served_name": "bad name!"}}, "model.served_name"),
        ({"adapters": None}, "adapters"),
    ],
)
def test_bad_values_name_the_field(patch, path_in_message):
    data = {**MINIMAL, **patch}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert path_in_message in str(err.value)


def test_cpu_cache_smaller_than_gpu_slots_is_refused():
    with pytest.raises(ConfigError, match="max_cpu_loras"):
        parse_config({**MINIMAL, "engine": {"max_loras": 4, "max_cpu_loras": 2}})


def test_lm_head_lora_is_refused_because_it_crashes_vllm():
    with pytest.raises(ConfigError, match="lm_head"):
        parse_config({**MINIMAL, "engine": {"lora_target_modules": ["q_proj", "lm_head"]}})


def test_config_is_frozen():
    config = parse_config(MINIMAL)
    with pytest.raises(Exception):
        config.engine.max_loras = 8


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_overrides_are_validated_too():
    config = parse_config(MINIMAL)
    assert config.with_overrides(port=18000).server.port == 18000
    with pytest.raises(Exception):
        config.with_overrides(port=0)


def test_auth_needs_a_keys_file_and_its_path_resolves_against_the_config(tmp_path):
    with pytest.raises(ConfigError, match="keys_file is required"):
        parse_config({**MINIMAL, "server": {"auth": {"enabled": True}}})
    (tmp_path / "c.yaml").write_text(
        "model: {source: /m, served_name: b}\nadapters: {uri: /a}\n"
        "server: {auth: {enabled: true, keys_file: keys.yaml}, usage: {ledger_path: data/usage.sqlite}}\n"
    )
    config = load_config(tmp_path / "c.yaml")
    assert config.server.auth.keys_file == str(tmp_path / "keys.yaml")
    assert config.server.usage.ledger_path == str(tmp_path / "data" / "usage.sqlite")


def test_the_demo_runs_without_auth_and_limits_default_open():
    config = load_config(REPO / "configs" / "default.yaml")
    assert config.server.auth.enabled is False
    limits = config.server.limits
    assert (limits.max_tokens, limits.max_prompt_tokens, limits.requests_per_second, limits.tokens_per_minute) == (None,) * 4
    with pytest.raises(ConfigError, match="server.limits.max_n"):
        parse_config({**MINIMAL, "server": {"limits": {"max_n": 0}}})
