"""Demo assets: a pretrained tiny base plus ten adapters trained by the factory,
deterministic for their recipe and cached by its digest."""

import filecmp
import json

from factory.demo_assets import BASE_NAME, DEMO_ADAPTERS, RECIPE_FILE, DemoAdapter, build_demo_assets
from factory.demo import DemoRecipe

# Volatile manifest fields: wall-clock facts and absolute paths of the build folder.
_VOLATILE = ("created_at", "train_seconds")


def _tree(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _stable_manifest(path):
    manifest = json.loads(path.read_text())
    for key in _VOLATILE:
        manifest.pop(key)
    manifest["dataset"].pop("path")
    manifest["base_model"].pop("source")
    return manifest


def test_the_build_is_byte_identical_for_a_recipe_whatever_the_parallelism(tmp_path):
    """The full recipe trains for minutes, so determinism is proven on a tiny one that runs
    the same code: pretraining, dataset generation, factory training in worker processes."""
    adapters = (DemoAdapter("one", 1, 8, ("q_proj", "down_proj"), "upper"), DemoAdapter("two", 2, 16, ("o_proj",), "rot13"))
    serial = DemoRecipe(pretrain_steps=6, pretrain_batch=8, adapter_steps=4, adapter_batch=8, workers=1)
    parallel = DemoRecipe(**{**serial.__dict__, "workers": 2})
    first = build_demo_assets(tmp_path / "a", adapters=adapters, recipe=serial, log=lambda _: None)
    second = build_demo_assets(tmp_path / "b", adapters=adapters, recipe=parallel, log=lambda _: None)
    assert _tree(first) == _tree(second)
    for rel in _tree(first):
        if rel.name == "training_manifest.json":
            assert _stable_manifest(first / rel) == _stable_manifest(second / rel), rel
        else:
            assert filecmp.cmp(first / rel, second / rel, shallow=False), rel


def test_a_matching_recipe_digest_skips_the_build(demo_assets):
    weights = demo_assets / "adapters" / "poet" / "adapter_model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_demo_assets(demo_assets) == demo_assets
    assert weights.stat().st_mtime_ns == before
    assert len((demo_assets / RECIPE_FILE).read_text().strip()) == 64


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


def test_demo_adapters_vary_rank_and_targets(demo_assets):
    configs = [json.loads(p.read_text()) for p in sorted((demo_assets / "adapters").glob("*/adapter_config.json"))]
    from factory.demo_assets import SECOND_ADAPTERS

    assert len(configs) == len(DEMO_ADAPTERS) + len(SECOND_ADAPTERS) == 13
    assert {c["r"] for c in configs} >= {8, 16}
    assert len({tuple(c["target_modules"]) for c in configs}) >= 4
    weights = [p.read_bytes() for p in sorted((demo_assets / "adapters").glob("*/adapter_model.safetensors"))]
    assert len(set(weights)) == len(weights)


def test_every_demo_adapter_was_trained_by_the_factory_on_its_dataset(demo_assets, base_info):
    from adapters.validation import validate_adapter
    from adapters.manifest import sha256_file
    from factory.fingerprint import base_model_fingerprint

    fingerprint = base_model_fingerprint(demo_assets / "base")
    for adapter in DEMO_ADAPTERS:
        folder = demo_assets / "adapters" / adapter.name
        spec = validate_adapter(folder, base=base_info, max_lora_rank=16)
        assert (spec.rank, spec.target_modules, spec.base_model) == (adapter.rank, tuple(sorted(adapter.target_modules)), BASE_NAME)
        manifest = json.loads((folder / "training_manifest.json").read_text())
        assert manifest["base_model"]["fingerprint_sha256"] == fingerprint
        assert manifest["dataset"]["sha256"] == sha256_file(demo_assets / "datasets" / f"{adapter.name}.jsonl")
        assert manifest["metrics"]["eval_loss"] < 0.2, f"{adapter.name} did not learn {adapter.task}"


def test_an_interrupted_build_keeps_its_pretrained_base_and_retrains_only_the_adapters(tmp_path):
    """What `make demo` (serve --demo) relies on to resume: the base marker outlives a build
    stopped while adapters trained; a finished build is marked only at the end."""
    from factory.demo_assets import BASE_FILE, build_demo_base, demo_digest, is_complete

    adapters = (DemoAdapter("one", 1, 8, ("q_proj", "down_proj"), "upper"),)
    recipe = DemoRecipe(pretrain_steps=4, pretrain_batch=8, adapter_steps=2, adapter_batch=8, workers=1)
    digest = demo_digest(adapters, recipe)
    out = tmp_path / "demo"
    assert build_demo_base(out, digest=digest, recipe=recipe, log=lambda _: None) is True
    weights = out / "base" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert (out / BASE_FILE).read_text().strip() == digest and not is_complete(out, digest)
    (out / "adapters" / "one").mkdir(parents=True)  # half-written by the interrupted run
    assert build_demo_base(out, digest=digest, recipe=recipe, log=lambda _: None) is False
    assert weights.stat().st_mtime_ns == before
    build_demo_assets(out, adapters=adapters, recipe=recipe, log=lambda _: None)
    assert weights.stat().st_mtime_ns == before  # the base was kept, the adapters trained
    assert (out / "adapters" / "one" / "adapter_model.safetensors").is_file() and is_complete(out, digest)


def test_a_base_marker_of_another_recipe_rebuilds_the_whole_folder(tmp_path):
    from factory.demo_assets import BASE_FILE, build_demo_base

    out = tmp_path / "demo"
    (out / "adapters" / "stale").mkdir(parents=True)
    (out / BASE_FILE).write_text("0" * 64 + "\n")
    recipe = DemoRecipe(pretrain_steps=2, pretrain_batch=4)
    assert build_demo_base(out, digest="1" * 64, recipe=recipe, log=lambda _: None) is True
    assert not (out / "adapters" / "stale").exists()


def test_the_second_demo_base_has_another_shape_and_its_adapters_were_trained_on_it(demo_assets):
    from adapters.validation import base_model_info, validate_adapter
    from factory.demo_assets import SECOND_ADAPTERS, SECOND_BASE_DIR, SECOND_BASE_NAME
    from factory.fingerprint import base_model_fingerprint

    wide = demo_assets / SECOND_BASE_DIR
    first, second = (json.loads((demo_assets / d / "config.json").read_text()) for d in ("base", SECOND_BASE_DIR))
    assert (first["hidden_size"], second["hidden_size"]) == (128, 192)
    assert second["head_dim"] == 64 and second["num_key_value_heads"] == 1
    info = base_model_info(str(wide), SECOND_BASE_NAME)
    fingerprint = base_model_fingerprint(wide)
    for adapter in SECOND_ADAPTERS:
        folder = demo_assets / "adapters" / adapter.name
        spec = validate_adapter(folder, base=info, max_lora_rank=16)
        assert spec.base_model == SECOND_BASE_NAME
        manifest = json.loads((folder / "training_manifest.json").read_text())
        assert manifest["base_model"]["fingerprint_sha256"] == fingerprint
        assert manifest["metrics"]["eval_loss"] < 0.2, f"{adapter.name} did not learn {adapter.task}"


def _fake_training(monkeypatch, losses: list[float]) -> list[int]:
    """factory.train.train replaced by one that writes an adapter folder whose manifest
    reports the next loss of `losses`; returns the training seeds it was called with."""
    import factory.train

    seeds = []

    def train(config, progress=False):
        seeds.append(config.training.seed)
        folder = config.adapter_dir
        folder.mkdir(parents=True, exist_ok=True)
        (folder / factory.train.MANIFEST).write_text(json.dumps({"metrics": {"eval_loss": losses[len(seeds) - 1], "seed": seeds[-1]}}))
        return folder

    monkeypatch.setattr(factory.train, "train", train)
    return seeds


def _train(tmp_path, attempts: int = 3):
    from dataclasses import asdict

    from factory.demo import _train_one

    adapter = {"name": "poet", "seed": 2, "rank": 16, "target_modules": ["v_proj"], "task": "vowels"}
    recipe = asdict(DemoRecipe(adapter_steps=1, adapter_batch=4, adapter_attempts=attempts))
    return _train_one(str(tmp_path / "base"), BASE_NAME, adapter, recipe, str(tmp_path / "adapters"), str(tmp_path))


def test_an_adapter_that_did_not_learn_its_skill_is_retrained_with_the_next_training_seed(tmp_path, monkeypatch):
    from factory.demo import RETRY_SEED_STRIDE

    seeds = _fake_training(monkeypatch, [3.2, 0.01])
    name, _, metrics = _train(tmp_path)
    assert seeds == [2, 2 + RETRY_SEED_STRIDE] and metrics["eval_loss"] == 0.01
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["poet"]  # no attempt left behind


def test_when_no_attempt_learns_the_closest_is_kept(tmp_path, monkeypatch):
    seeds = _fake_training(monkeypatch, [3.2, 2.0, 2.5])
    _, _, metrics = _train(tmp_path)
    assert len(seeds) == 3 and metrics == {"eval_loss": 2.0, "seed": seeds[1]}
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["poet"]
