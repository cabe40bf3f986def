"""`lorafleet train` configs: strict schema, errors that name the field to fix."""

import pytest

from factory.config import load_train_config, parse_train_config
from factory.errors import TrainConfigError

MINIMAL = {
    "base_model": {"source": "org/some-model"},
    "dataset": {"path": "data.jsonl"},
    "output": {"dir": "out", "adapter_name": "my-adapter"},
}


def _with(**sections):
    return {**MINIMAL, **sections}


def test_minimal_config_gets_described_defaults():
    config = parse_train_config(MINIMAL)
    assert config.lora.rank == 8 and config.lora.alpha == 16
    assert config.training.seed == 0 and config.training.device == "auto"
    assert config.base_model.recorded_name == "org/some-model"
    assert str(config.adapter_dir) == "out/my-adapter"


def test_relative_paths_resolve_against_the_config_folder_and_hub_ids_stay(tmp_path):
    (tmp_path / "base").mkdir()
    path = tmp_path / "train.yaml"
    path.write_text(
        "base_model: {source: ./base}\n"
        "dataset: {path: data/train.jsonl}\n"
        "output: {dir: out, adapter_name: a1}\n"
    )
    config = load_train_config(path)
    assert config.base_model.source == str(tmp_path / "base")
    assert config.dataset.path == str(tmp_path / "data" / "train.jsonl")
    assert config.output.dir == str(tmp_path / "out")
    hub = tmp_path / "hub.yaml"
    hub.write_text("base_model: {source: org/model}\ndataset: {path: d.jsonl}\noutput: {dir: o, adapter_name: a}\n")
    assert load_train_config(hub).base_model.source == "org/model"


@pytest.mark.parametrize(
    "sections, field",
    [
        ({"training": {"learning_rat": 0.1}}, "training.learning_rat"),
        ({"lora": {"target_modules": ["q_proj", "lm_head"]}}, "lora.target_modules"),
        ({"lora": {"target_modules": ["embed_tokens"]}}, "lora.target_modules"),
        ({"lora": {"rank": 0}}, "lora.rank"),
        ({"lora": {"rank": 512}}, "lora.rank"),
        ({"dataset": {"path": "d.jsonl", "eval_fraction": 1.0}}, "dataset.eval_fraction"),
        ({"training": {"device": "tpu"}}, "training.device"),
        ({"training": {"batch_size": -1}}, "training.batch_size"),
        ({"output": {"dir": "out", "adapter_name": "../escape"}}, "output.adapter_name"),
        ({"extra_section": {}}, "extra_section"),
    ],
)
def test_bad_fields_are_named(sections, field):
    with pytest.raises(TrainConfigError) as err:
        parse_train_config(_with(**sections))
    assert f"  {field}:" in err.value.message


def test_missing_required_section_is_named():
    with pytest.raises(TrainConfigError, match="output: Field required"):
        parse_train_config({k: v for k, v in MINIMAL.items() if k != "output"})


def test_target_modules_error_lists_the_allowed_projections():
    with pytest.raises(TrainConfigError, match="lm_head.*allowed: q_proj, k_proj"):
        parse_train_config(_with(lora={"target_modules": ["lm_head"]}))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(TrainConfigError, match="not found"):
        load_train_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: [unclosed\n")
    with pytest.raises(TrainConfigError, match="not valid YAML"):
        load_train_config(bad)
