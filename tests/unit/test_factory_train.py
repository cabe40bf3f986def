"""`factory.train.train`: a tiny real training run (seconds, random tiny base) that
writes a servable adapter, the same bytes for the same seed, and a complete manifest."""

import json
import math
from datetime import datetime

import pytest

from adapters.validation import base_model_info, validate_adapter
from factory.config import parse_train_config
from adapters.manifest import sha256_file
from factory.fingerprint import base_model_fingerprint
from factory.train import MANIFEST, train


def _dataset(path):
    rows = [{"prompt": f"upper: {w}\n", "completion": w.upper()} for w in ("abc", "hello", "fleet", "lora", "tiny", "base")] * 4
    rows.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "HI"}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(base, data, out, seed=0, name="upper-tiny"):
    return parse_train_config({
        "base_model": {"source": str(base), "name": "lorafleet-tiny-llama"},
        "dataset": {"path": str(data), "eval_fraction": 0.2},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["v_proj", "q_proj", "down_proj"]},
        "training": {"epochs": 2, "batch_size": 8, "learning_rate": 0.005, "max_length": 32, "seed": seed},
        "output": {"dir": str(out), "adapter_name": name},
    })


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory):
    work = tmp_path_factory.mktemp("train")
    data = _dataset(work / "data.jsonl")
    return tiny_base, data, train(_config(tiny_base, data, work / "run1"), progress=False)


def test_output_is_a_peft_adapter_the_fleet_accepts(trained):
    base, _, folder = trained
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", MANIFEST]
    spec = validate_adapter(folder, base=base_model_info(str(base), "lorafleet-tiny-llama"), max_lora_rank=8)
    assert (spec.rank, spec.target_modules, spec.base_model) == (8, ("down_proj", "q_proj", "v_proj"), "lorafleet-tiny-llama")
    assert not list(folder.parent.glob(".*partial"))  # staging folder cleaned up


def test_manifest_records_inputs_hyperparameters_losses_and_versions(trained):
    import peft
    import torch
    import transformers

    base, data, folder = trained
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["adapter_name"] == "upper-tiny"
    assert manifest["base_model"]["fingerprint_sha256"] == base_model_fingerprint(base)
    assert manifest["base_model"]["name"] == "lorafleet-tiny-llama"
    assert manifest["dataset"]["sha256"] == sha256_file(data)
    assert (manifest["dataset"]["rows"], manifest["dataset"]["train_rows"], manifest["dataset"]["eval_rows"]) == (25, 20, 5)
    assert manifest["hyperparameters"]["lora"]["rank"] == 8
    assert manifest["hyperparameters"]["training"]["learning_rate"] == 0.005
    assert manifest["metrics"]["steps"] == 6  # 2 epochs x ceil(20 / 8)
    assert all(math.isfinite(manifest["metrics"][k]) and manifest["metrics"][k] > 0 for k in ("train_loss", "eval_loss"))
    assert manifest["library_versions"] == {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    assert manifest["device"] == "cpu"


def test_same_seed_gives_identical_weight_bytes_and_another_seed_does_not(trained, tmp_path):
    base, data, folder = trained
    again = train(_config(base, data, tmp_path / "run2"), progress=False)
    other = train(_config(base, data, tmp_path / "run3", seed=1), progress=False)
    weights = (folder / "adapter_model.safetensors").read_bytes()
    assert (again / "adapter_model.safetensors").read_bytes() == weights
    assert (again / "adapter_config.json").read_bytes() == (folder / "adapter_config.json").read_bytes()
    assert (other / "adapter_model.safetensors").read_bytes() != weights


def test_the_fingerprint_changes_with_the_base_weights(tiny_base, tmp_path):
    import shutil

    copy = tmp_path / "base-copy"
    shutil.copytree(tiny_base, copy)
    assert base_model_fingerprint(copy) == base_model_fingerprint(tiny_base)  # location-independent
    raw = bytearray((copy / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(raw))
    assert base_model_fingerprint(copy) != base_model_fingerprint(tiny_base)


def test_a_bad_row_fails_before_any_output_is_written(tiny_base, tmp_path):
    from factory.errors import DatasetError

    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(DatasetError, match="data.jsonl:2"):
        train(_config(tiny_base, data, tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_trains_from_a_yaml_config(tiny_base, tmp_path, capsys):
    from deployments.cli import main

    data = _dataset(tmp_path / "data.jsonl")
    (tmp_path / "train.yaml").write_text(
        f"base_model: {{source: {tiny_base}, name: lorafleet-tiny-llama}}\n"
        "dataset: {path: data.jsonl}\n"
        "lora: {rank: 8, target_modules: [q_proj]}\n"
        "training: {epochs: 1, batch_size: 16, max_length: 32}\n"
        "output: {dir: out, adapter_name: cli-adapter}\n"
    )
    assert main(["train", str(tmp_path / "train.yaml"), "--quiet"]) == 0
    assert "adapter written to" in capsys.readouterr().out
    assert (tmp_path / "out" / "cli-adapter" / "adapter_model.safetensors").is_file()
    (tmp_path / "bad.yaml").write_text("base_model: {source: x}\ndataset: {path: d}\noutput: {dir: o, adapter_name: a}\nlora: {rank: 0}\n")
    assert main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert "lora.rank" in capsys.readouterr().err
