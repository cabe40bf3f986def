"""Demo assets are deterministic: the same command twice gives byte-identical files."""

import filecmp
import json

from adapters.demo import build_demo_assets


def _tree(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_demo_assets_are_byte_identical_across_runs(tmp_path, demo_assets):
    again = build_demo_assets(tmp_path / "again")
    assert _tree(again) == _tree(demo_assets)
    for rel in _tree(demo_assets):
        assert filecmp.cmp(demo_assets / rel, again / rel, shallow=False), rel


def test_base_model_is_a_loadable_hf_folder_with_a_chat_template(demo_assets):
    base = demo_assets / "base"
    config = json.loads((base / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["head_dim"] == 64  # vLLM's CPU attention rejects head_dim 16
    assert (base / "model.safetensors").is_file()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    text = "Grüße, lorafleet! 🚀"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|assistant|>\n")


def test_demo_adapters_vary_seed_rank_and_targets(demo_assets):
    configs = [json.loads(p.read_text()) for p in sorted((demo_assets / "adapters").glob("*/adapter_config.json"))]
    assert len(configs) >= 8
    assert {c["r"] for c in configs} >= {8, 16}
    assert len({tuple(c["target_modules"]) for c in configs}) >= 4
    weights = [p.read_bytes() for p in sorted((demo_assets / "adapters").glob("*/adapter_model.safetensors"))]
    assert len(set(weights)) == len(weights)
