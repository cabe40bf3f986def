"""Poison adapters are refused before any engine sees them: every LoRA tensor's full shape
is checked against the base model's module dimensions, wherever the base comes from
(local weights, config.json alone, a hub id through the HF cache; S3 in
tests/integration/test_store_s3.py).

Before: validation checked only the rank dimension, and skipped module names when the
base was a hub id, so the first poison below (right rank, lora_A 7 columns too wide) was
accepted and published; vLLM 0.32 dies on it inside a generate step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from adapters.base_model import base_model_info, modules_from_config, modules_from_headers
from factory.demo_assets import BASE_NAME
from adapters.errors import AdapterInvalid, BaseModelUnknown
from adapters.safetensors_header import read_safetensors_header
from adapters.store import LocalAdapterStore
from adapters.validation import validate_adapter
from tests.conftest import REPO
from tests.poison_adapters import POISONS, widen_lora_a

EXPECTED = {
    "lora_A 7 columns too wide": "has shape [16, 135], expected [16, 128]",
    "lora_B 3 rows short": "has shape [125, 16], expected [128, 16]",
    "a layer the base lacks": "model.layers.7.self_attn.v_proj', which this base model does not have (2 layers",
    "lora_A and lora_B ranks differ": "has shape [128, 8], expected [128, 16]",
    "lora_A without lora_B": "has no lora_B tensor",
    "rank_pattern contradicts the tensors": "has shape [16, 128], expected [8, 128]",
}


@pytest.fixture
def poet(demo_assets):
    return demo_assets / "adapters" / "poet"  # rank 16; down_proj, o_proj, up_proj, v_proj


@pytest.fixture
def config_only_base(tmp_path, demo_assets):
    """The demo base as a hub-less deployment might see it: config.json, no weights."""
    folder = tmp_path / BASE_NAME
    folder.mkdir()
    shutil.copy(demo_assets / "base" / "config.json", folder / "config.json")
    return folder


@pytest.mark.parametrize("poison", list(POISONS), ids=list(POISONS))
def test_poison_adapter_is_refused_naming_the_tensor_and_its_expected_shape(poison, poet, base_info, tmp_path):
    folder = POISONS[poison](poet, tmp_path / "poison")
    with pytest.raises(AdapterInvalid) as err:
        validate_adapter(folder, base=base_info, max_lora_rank=16)
    assert EXPECTED[poison] in err.value.message
    assert "v_proj" in err.value.message


def test_base_dims_from_config_json_equal_the_dims_read_from_the_weights(demo_assets, base_info):
    config = json.loads((demo_assets / "base" / "config.json").read_text())
    derived = modules_from_config(config)
    exact = modules_from_headers([read_safetensors_header(demo_assets / "base" / "model.safetensors")])
    assert derived and all(exact[path] == dims for path, dims in derived.items())
    assert base_info.num_layers == 2 and base_info.modules["model.layers.1.mlp.down_proj"] == (352, 128)


def test_poison_is_refused_when_the_base_has_only_a_config_json(config_only_base, poet, tmp_path):
    base = base_model_info(str(config_only_base), BASE_NAME)
    assert base.dims_from == "config.json"
    validate_adapter(poet, base=base, max_lora_rank=16)
    with pytest.raises(AdapterInvalid, match=r"expected \[16, 128\]"):
        validate_adapter(widen_lora_a(poet, tmp_path / "poison"), base=base, max_lora_rank=16)


def test_unknown_architecture_without_weights_refuses_to_start_with_a_clear_message(config_only_base):
    config = json.loads((config_only_base / "config.json").read_text())
    (config_only_base / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
    with pytest.raises(BaseModelUnknown, match="model_type 'mamba'"):
        base_model_info(str(config_only_base), BASE_NAME)


def test_unknown_architecture_with_readable_weights_is_checked_from_the_weights(demo_assets, tmp_path):
    folder = tmp_path / "base"
    shutil.copytree(demo_assets / "base", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
    base = base_model_info(str(folder), BASE_NAME)
    assert base.dims_from == "safetensors headers" and base.modules["model.layers.0.self_attn.q_proj"] == (128, 128)


def _hub_cache(root, repo_id: str, config_file) -> None:
    """A Hugging Face cache holding only `repo_id`'s config.json, as a previous download leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    shutil.copy(config_file, snapshot / "config.json")


_HUB_CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from adapters.errors import AdapterInvalid, BaseModelUnknown
    from adapters.validation import base_model_info, validate_adapter
    try:
        base = base_model_info(sys.argv[1], "tiny", ("lorafleet-tiny-llama",))
    except BaseModelUnknown as err:
        print(json.dumps({"start": err.message})); raise SystemExit
    verdicts = {}
    for folder in sys.argv[2:]:
        try:
            validate_adapter(Path(folder), base=base, max_lora_rank=16); verdicts[folder] = "ok"
        except AdapterInvalid as err:
            verdicts[folder] = err.message
    print(json.dumps({"start": "ok", "dims_from": base.dims_from, "verdicts": verdicts}))
""")


def _run_offline(tmp_path, repo_id: str, *folders) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_TOKEN", None)
    done = subprocess.run([sys.executable, "-c", _HUB_CHILD, repo_id, *map(str, folders)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_poison_is_refused_when_the_base_is_a_hub_id_read_from_the_hf_cache(tmp_path, demo_assets, poet):
    """The Helm default serves a hub id: its config.json comes through huggingface_hub
    (offline here, from a pre-populated cache), never skipped."""
    _hub_cache(tmp_path / "hub", "acme/tiny-llama", demo_assets / "base" / "config.json")
    poison = widen_lora_a(poet, tmp_path / "poison")
    result = _run_offline(tmp_path, "acme/tiny-llama", poet, poison)
    assert result["start"] == "ok" and result["dims_from"] == "config.json"
    assert result["verdicts"][str(poet)] == "ok"
    assert "expected [16, 128]" in result["verdicts"][str(poison)]


def test_hub_base_that_cannot_be_read_refuses_to_start(tmp_path):
    (tmp_path / "hub").mkdir()
    result = _run_offline(tmp_path, "acme/not-in-the-cache")
    assert "cannot read config.json of the base model 'acme/not-in-the-cache'" in result["start"]


def test_publishing_a_poison_adapter_is_refused_and_writes_nothing(tmp_path, base_info, poet):
    store = LocalAdapterStore(tmp_path / "store", base=base_info, max_lora_rank=16, cache_dir=tmp_path / "cache")
    with pytest.raises(AdapterInvalid, match=r"lora_A\.weight' has shape \[16, 135\]"):
        store.publish(widen_lora_a(poet, tmp_path / "poison"), "custom")
    assert store.names() == [] and not (tmp_path / "store" / "custom").exists()


def _edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    "changes, phrase",
    [
        ({"rank_pattern": {"(a+)+$": 8}}, "regular expressions are not supported"),
        ({"alpha_pattern": {".*": 8}}, "regular expressions are not supported"),
        ({"lora_bias": True}, "LoRA bias"),
        ({"bias": "all"}, "bias='all'"),
        ({"init_lora_weights": "pissa"}, "PiSSA"),
        ({"layer_replication": [[0, 2]]}, "layer_replication"),
    ],
)
def test_adapter_configs_the_engine_would_refuse_are_refused_at_upload(poet, base_info, tmp_path, changes, phrase):
    folder = tmp_path / "a"
    shutil.copytree(poet, folder)
    _edit_config(folder, **changes)
    with pytest.raises(AdapterInvalid, match=phrase):
        validate_adapter(folder, base=base_info, max_lora_rank=16)


def test_rank_pattern_with_module_names_sets_the_rank_each_tensor_must_have(poet, base_info, tmp_path):
    """rank_pattern {"v_proj": 8} with v_proj tensors cut to rank 8: valid (as peft saves it)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "a"
    shutil.copytree(poet, folder)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    for key in list(tensors):
        if ".v_proj." in key:
            tensors[key] = np.ascontiguousarray(tensors[key][:8] if ".lora_A." in key else tensors[key][:, :8])
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    _edit_config(folder, rank_pattern={"v_proj": 8})
    assert validate_adapter(folder, base=base_info, max_lora_rank=16).rank == 16


def test_tensor_whose_bytes_do_not_match_its_shape_is_refused(poet, base_info, tmp_path):
    import struct

    folder = tmp_path / "a"
    shutil.copytree(poet, folder)
    raw = (folder / "adapter_model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    key = next(k for k in header if k != "__metadata__")
    header[key]["data_offsets"][1] -= 4
    body = json.dumps(header).encode()
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + length:])
    with pytest.raises(AdapterInvalid, match="spans"):
        validate_adapter(folder, base=base_info, max_lora_rank=16)
