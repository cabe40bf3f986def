"""`lorafleet merge`: peft's weighted-adapter methods, validated output, clear refusals."""

import json
import math

import pytest

from factory.demo_assets import BASE_NAME, DemoAdapter, build_adapter
from adapters.validation import base_model_info, validate_adapter
from factory.errors import FactoryError
from factory.merge import MERGE_MANIFEST, merge_adapters


@pytest.fixture(scope="module")
def store(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    for spec in (
        DemoAdapter("a8", 1, 8, ("q_proj", "v_proj")),
        DemoAdapter("b8", 2, 8, ("v_proj", "down_proj")),
        DemoAdapter("c16", 3, 16, ("q_proj", "v_proj")),
        DemoAdapter("d16", 4, 16, ("o_proj",)),
    ):
        build_adapter(tiny_base, spec, root / spec.name)
    return root


def _delta(folder, base, module="model.layers.0.self_attn.v_proj"):
    """The adapter's weight update of one module, as peft applies it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), str(folder))
    layer = model.base_model.model.get_submodule(module)
    return layer.get_delta_weight("default")


@pytest.mark.parametrize("method", ["linear", "ties", "dare_linear"])
def test_merged_adapter_is_valid_and_covers_the_union_of_targets(tiny_base, store, tmp_path, method):
    out = merge_adapters([store / "a8", store / "b8"], base=str(tiny_base), out_dir=tmp_path, name="mix",
                         method=method, weights=[0.7, 0.3])
    spec = validate_adapter(out, base=base_model_info(str(tiny_base), BASE_NAME), max_lora_rank=16)
    assert spec.rank == 8
    assert spec.target_modules == ("down_proj", "q_proj", "v_proj")
    assert spec.base_model == BASE_NAME
    manifest = json.loads((out / MERGE_MANIFEST).read_text())
    assert manifest["method"] == method and manifest["weights"] == [0.7, 0.3]
    assert [i["name"] for i in manifest["inputs"]] == ["a8", "b8"]
    assert not list(tmp_path.glob(".*partial"))


def test_linear_merge_of_one_adapter_with_itself_reproduces_its_update(tiny_base, store, tmp_path):
    import shutil

    shutil.copytree(store / "a8", tmp_path / "a8-copy")
    # peft's linear merge scales A and B by sqrt(weight) each: weights 0.5 + 0.5 of the same adapter
    # stack into A*(2*sqrt(.5)) and B*(2*sqrt(.5)), i.e. twice the update.
    out = merge_adapters([store / "a8", tmp_path / "a8-copy"], base=str(tiny_base), out_dir=tmp_path, name="same",
                         method="linear", weights=[0.5, 0.5])
    original, merged = _delta(store / "a8", tiny_base), _delta(out, tiny_base)
    assert math.isclose(float((merged - 2 * original).abs().max()), 0.0, abs_tol=1e-5)


def test_dare_is_deterministic_for_a_seed(tiny_base, store, tmp_path):
    kwargs = dict(base=str(tiny_base), method="dare_linear", weights=[1.0, 1.0], density=0.5)
    first = merge_adapters([store / "a8", store / "b8"], out_dir=tmp_path / "1", name="d", seed=3, **kwargs)
    second = merge_adapters([store / "a8", store / "b8"], out_dir=tmp_path / "2", name="d", seed=3, **kwargs)
    other = merge_adapters([store / "a8", store / "b8"], out_dir=tmp_path / "3", name="d", seed=4, **kwargs)
    weights = (first / "adapter_model.safetensors").read_bytes()
    assert (second / "adapter_model.safetensors").read_bytes() == weights
    assert (other / "adapter_model.safetensors").read_bytes() != weights


@pytest.mark.parametrize(
    "names, kwargs, message",
    [
        (["a8", "c16"], {}, r"equal rank \(a8: r=8, c16: r=16\)"),
        (["c16", "d16"], {"max_lora_rank": 8}, "merged rank 16 exceeds max_lora_rank 8"),
        (["a8", "b8"], {"weights": [1.0]}, "1 weight\\(s\\) for 2 adapters"),
        (["a8"], {}, "at least two adapters"),
        (["a8", "b8"], {"method": "svd"}, "unknown merge method"),
        (["a8", "b8"], {"method": "ties", "density": 0.0}, "density must be in"),
        (["a8", "missing"], {}, "adapter folder not found"),
    ],
)
def test_refusals_name_the_problem_and_write_nothing(tiny_base, store, tmp_path, names, kwargs, message):
    with pytest.raises(FactoryError, match=message):
        merge_adapters([store / n for n in names], base=str(tiny_base), out_dir=tmp_path, name="bad", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_unsafe_or_foreign_inputs_are_refused(tiny_base, store, tmp_path):
    import shutil

    pickled = tmp_path / "in" / "pickled"
    shutil.copytree(store / "b8", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(FactoryError, match="input adapter refused: pickle"):
        merge_adapters([store / "a8", pickled], base=str(tiny_base), out_dir=tmp_path / "out", name="x")
    foreign = tmp_path / "in" / "foreign"
    shutil.copytree(store / "b8", foreign)
    config = json.loads((foreign / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "some/other-model"
    (foreign / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(FactoryError, match="different base models"):
        merge_adapters([store / "a8", foreign], base=str(tiny_base), out_dir=tmp_path / "out", name="x")
    assert not (tmp_path / "out").exists()


def test_cli_merges_names_from_a_store_and_reports_errors(tiny_base, store, capsys):
    from deployments.cli import main

    assert main(["merge", "a8", "b8", "--store", str(store), "--base", str(tiny_base), "--out", "cli-mix",
                 "--method", "ties", "--weights", "1,0.5"]) == 0
    assert (store / "cli-mix" / "adapter_model.safetensors").is_file()
    assert main(["merge", "a8", "c16", "--store", str(store), "--base", str(tiny_base), "--out", "nope"]) == 2
    assert "equal rank" in capsys.readouterr().err
    assert not (store / "nope").exists()
