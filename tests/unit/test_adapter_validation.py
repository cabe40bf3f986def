"""Adapter validation: an invalid adapter is reported with a reason and never served."""

import json
import shutil
import struct

import pytest

from adapters.errors import AdapterInvalid, AdapterNotFound
from adapters.store import LocalAdapterStore
from adapters.validation import check_adapter_name, validate_adapter


@pytest.fixture
def store_dir(tmp_path, demo_assets):
    root = tmp_path / "adapters"
    shutil.copytree(demo_assets / "adapters", root)
    return root


def _edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _write_safetensors(path, tensors: dict[str, list[int]]):
    header = {name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]} for name, shape in tensors.items()}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


@pytest.fixture(scope="module")
def served_bases(demo_assets, base_info):
    from adapters.validation import ServedBase, base_model_info
    from factory.demo_assets import SECOND_BASE_DIR, SECOND_BASE_NAME

    wide = base_model_info(str(demo_assets / SECOND_BASE_DIR), SECOND_BASE_NAME)
    return ServedBase(base_info, 16), ServedBase(wide, 16)


def test_every_demo_adapter_is_valid_and_bound_to_the_base_it_was_trained_on(store_dir, served_bases):
    from factory.demo_assets import BASE_NAME, SECOND_ADAPTERS, SECOND_BASE_NAME

    specs = [validate_adapter(p, bases=served_bases) for p in sorted(store_dir.iterdir())]
    assert len(specs) >= 8
    assert {s.rank for s in specs} >= {8, 16}
    assert len({s.target_modules for s in specs}) >= 4
    second = {a.name for a in SECOND_ADAPTERS}
    assert {s.name: s.base for s in specs} == {s.name: SECOND_BASE_NAME if s.name in second else BASE_NAME for s in specs}


def test_an_adapter_of_one_base_is_refused_on_the_other_for_its_shapes_not_just_its_name(store_dir, served_bases):
    """A second-base adapter relabelled as the first base's: the name now matches, the
    tensors do not (hidden 192 vs 128), so it is refused naming the tensor."""
    from factory.demo_assets import BASE_NAME

    folder = store_dir / "wide-leet"
    _edit_config(folder, base_model_name_or_path=BASE_NAME)
    with pytest.raises(AdapterInvalid, match="shape|features|expected"):
        validate_adapter(folder, bases=served_bases)


def test_an_adapter_for_no_served_base_is_refused_naming_the_bases_that_are(store_dir, served_bases):
    folder = store_dir / "poet"
    _edit_config(folder, base_model_name_or_path="meta-llama/Llama-3.1-8B")
    with pytest.raises(AdapterInvalid, match="lorafleet-tiny-llama.*lorafleet-tiny-wide"):
        validate_adapter(folder, bases=served_bases)


@pytest.mark.parametrize("name", ["..", ".", "../etc", "a/b", "", "-lead", "x" * 65, "a b", "adapter@v1", "ä"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(AdapterInvalid):
        check_adapter_name(name)


@pytest.mark.parametrize("name", ["poet", "Poet-2", "a.b_c-d", "x" * 64])
def test_safe_names_pass(name):
    assert check_adapter_name(name) == name


def _break(folder, how):
    if how == "pickle weights":
        (folder / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    elif how == "no config":
        (folder / "adapter_config.json").unlink()
    elif how == "config not json":
        (folder / "adapter_config.json").write_text("{not json")
    elif how == "config not object":
        (folder / "adapter_config.json").write_text("[1, 2]")
    elif how == "other base model":
        _edit_config(folder, base_model_name_or_path="meta-llama/Llama-3.1-8B")
    elif how == "rank above limit":
        _edit_config(folder, r=64)
    elif how == "rank not int":
        _edit_config(folder, r="8")
    elif how == "targets lm_head":
        _edit_config(folder, target_modules=["q_proj", "lm_head"])
    elif how == "targets embeddings":
        _edit_config(folder, target_modules=["embed_tokens"])
    elif how == "unknown module":
        _edit_config(folder, target_modules=["q_proj", "attn_fused"])
    elif how == "regex targets":
        _edit_config(folder, target_modules=".*proj")
    elif how == "modules_to_save":
        _edit_config(folder, modules_to_save=["lm_head"])
    elif how == "dora":
        _edit_config(folder, use_dora=True)
    elif how == "not lora":
        _edit_config(folder, peft_type="PREFIX_TUNING")
    elif how == "no weights":
        (folder / "adapter_model.safetensors").unlink()
    elif how == "weights garbage":
        (folder / "adapter_model.safetensors").write_bytes(b"\x00\x01")
    elif how == "huge header":
        (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 1 << 40))
    elif how == "stray tensor":
        _write_safetensors(folder / "adapter_model.safetensors", {"base_model.model.lm_head.weight": [320, 128]})
    elif how == "tensor rank above limit":
        _write_safetensors(folder / "adapter_model.safetensors", {"base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight": [32, 128]})
    else:
        raise AssertionError(how)


BREAKAGES = [
    ("pickle weights", "pickle"),
    ("no config", "missing adapter_config.json"),
    ("config not json", "not valid JSON"),
    ("config not object", "JSON object"),
    ("other base model", "base model"),
    ("rank above limit", "max_lora_rank"),
    ("rank not int", "positive integer"),
    ("targets lm_head", "lm_head"),
    ("targets embeddings", "embed_tokens"),
    ("unknown module", "do not exist in the base model"),
    ("regex targets", "regular expression"),
    ("modules_to_save", "modules_to_save"),
    ("dora", "DoRA"),
    ("not lora", "peft_type"),
    ("no weights", "missing adapter_model.safetensors"),
    ("weights garbage", "safetensors"),
    ("huge header", "implausible"),
    ("stray tensor", "only lora_A/lora_B"),
    ("tensor rank above limit", "max_lora_rank"),
]


@pytest.mark.parametrize("how, reason", BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_broken_adapters_are_refused_with_a_reason(store_dir, base_info, how, reason):
    folder = store_dir / "poet"  # rank 16, targets v_proj among others
    _break(folder, how)
    with pytest.raises(AdapterInvalid) as err:
        validate_adapter(folder, base=base_info, max_lora_rank=16)
    assert reason in err.value.message


def test_store_reports_invalid_adapters_and_never_resolves_them(store_dir, base_info):
    _break(store_dir / "pirate", "pickle weights")
    store = LocalAdapterStore(store_dir, base=base_info, max_lora_rank=16)
    report = {e.name: e.error for e in store.entries()}
    assert "pickle" in report["pirate"]
    assert report["poet"] is None
    assert "pirate" not in {s.name for s in store.list_valid()}
    with pytest.raises(AdapterInvalid, match="not servable"):
        store.resolve("pirate")
    assert store.resolve("poet").name == "poet"


@pytest.mark.parametrize("name", ["missing", "../adapters/poet", "poet/../poet", ""])
def test_store_resolve_unknown_or_traversal_is_not_found(store_dir, base_info, name):
    store = LocalAdapterStore(store_dir, base=base_info, max_lora_rank=16)
    with pytest.raises(AdapterNotFound):
        store.resolve(name)


def test_store_revalidates_when_files_change(store_dir, base_info):
    store = LocalAdapterStore(store_dir, base=base_info, max_lora_rank=16)
    before = store.resolve("haiku")
    _edit_config(store_dir / "haiku", target_modules=["lm_head"])
    with pytest.raises(AdapterInvalid):
        store.resolve("haiku")
    shutil.rmtree(store_dir / "haiku")
    shutil.copytree(store_dir / "poet", store_dir / "haiku")
    after = store.resolve("haiku")
    assert after.fingerprint != before.fingerprint
