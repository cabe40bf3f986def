"""Property tests: whatever a hostile or careless user feeds the parsers, they fail
only with the project's typed errors, never with a crash (which the ingress would
turn into a 500, the CLI into a traceback, the store into a skipped folder scan).

- config: any data -> LorafleetConfig or ConfigError naming a field path;
- adapter folders: any adapter_config.json / safetensors header -> AdapterSpec or AdapterInvalid;
- requests: any body bytes / JSON object -> a dict / pass, or InvalidRequest.

Strategies start from valid inputs and mutate them, so the search reaches deep
checks instead of stopping at "not an object".
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.base_model import modules_from_config
from adapters.errors import AdapterInvalid
from deployments.errors import InvalidRequest
from adapters.validation import AdapterSpec, BaseModelInfo, validate_adapter
from deployments.config import ConfigError, LorafleetConfig, ModelConfig, parse_config
from deployments.engine.protocol import Endpoint
from deployments.api.request_checks import check_request, parse_json_object, requested_model

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
keys = st.text(alphabet=st.characters(blacklist_characters="\n.:"), max_size=10)  # "." and ":" would blur the path check
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12
)
# Values shaped like what a field might plausibly hold, plus junk.
field_values = json_values | st.integers(-(2**70), 2**70) | st.sampled_from(["", "0", "-1", "../x", "a\x00b", "s3://b/k", "lm_head"])


def _mutated(valid: dict, keys: list[str]) -> st.SearchStrategy[dict]:
    """`valid` with some known keys set to arbitrary values and some removed."""
    return st.builds(
        lambda updates, dropped: {**{k: v for k, v in valid.items() if k not in dropped}, **updates},
        st.dictionaries(st.sampled_from(keys), field_values, max_size=4),
        st.sets(st.sampled_from(sorted(valid) or keys), max_size=2),
    )


# --- config ---------------------------------------------------------------------------

VALID_CONFIG = {"model": {"source": "base", "served_name": "tiny"}, "adapters": {"uri": "adapters"}}
SECTIONS = {name: list(field.annotation.model_fields) for name, field in LorafleetConfig.model_fields.items()
            if name != "models"}
SECTIONS["model"] = list(ModelConfig.model_fields)  # the one-base form the valid config uses
SECTIONS["models"] = list(ModelConfig.model_fields)  # named when neither form is given


@st.composite
def configs(draw):
    config = dict(VALID_CONFIG)
    for section in draw(st.sets(st.sampled_from(sorted(SECTIONS)), max_size=3)):
        valid = VALID_CONFIG.get(section, {})
        config[section] = draw(_mutated(valid, SECTIONS[section]) | json_values)
    return draw(st.just(config) | json_values.map(lambda junk: junk))


def _assert_names_field_paths(err: ConfigError, data: object) -> None:
    """Each error line is `  <path>: <reason>`, the path starting at a config section
    or at the offending top-level key."""
    header, _, first = str(err).partition("\n")
    assert header == "invalid config:"
    path, _, reason = first.strip().partition(": ")
    assert reason, first
    known = set(SECTIONS) | (set(data) if isinstance(data, dict) else set())
    assert path == "(root)" or path.split(".")[0] in known, first


@SETTINGS
@given(configs())
@example({**VALID_CONFIG, "model": {"source": "a\x00b", "served_name": "tiny"}})  # regression: NUL in a path
def test_any_config_data_parses_or_fails_with_config_error_naming_the_field(data):
    with tempfile.TemporaryDirectory() as base_dir:
        try:
            config = parse_config(data, base_dir=Path(base_dir))
        except ConfigError as err:
            _assert_names_field_paths(err, data)
        else:
            assert isinstance(config, LorafleetConfig)


# --- adapter folders ------------------------------------------------------------------

VALID_ADAPTER_CONFIG = {
    "peft_type": "LORA", "base_model_name_or_path": "tiny", "r": 8, "lora_alpha": 16,
    "target_modules": ["q_proj", "v_proj"], "rank_pattern": {}, "use_dora": False, "modules_to_save": None,
}
VALID_HEADER = {
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": {"dtype": "F32", "shape": [8, 128], "data_offsets": [0, 4096]},
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": {"dtype": "F32", "shape": [128, 8], "data_offsets": [4096, 8192]},
}
VALID_DATA_BYTES = 8192
BASE = BaseModelInfo(accepted_names=frozenset({"tiny"}), modules=modules_from_config(
    {"model_type": "llama", "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 352, "num_hidden_layers": 2}))

adapter_configs = _mutated(VALID_ADAPTER_CONFIG, list(VALID_ADAPTER_CONFIG) + ["rank_pattern", "alpha_pattern"]) | json_values
headers = (
    st.dictionaries(st.sampled_from(sorted(VALID_HEADER)) | st.text(max_size=40), json_values | st.just({"shape": [8, 128]}), max_size=3)
    | st.just(VALID_HEADER)
    | json_values
)


def _write_adapter(folder: Path, config_text: str, header: object | bytes) -> None:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(config_text)
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    data = b"\0" * VALID_DATA_BYTES if header == VALID_HEADER else b""  # the tensors' bytes, so a valid one passes
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@SETTINGS
@given(adapter_configs, headers)
@example({**VALID_ADAPTER_CONFIG, "base_model_name_or_path": ["tiny"]}, VALID_HEADER)  # regression: unhashable base name
@example({**VALID_ADAPTER_CONFIG, "target_modules": [["q_proj"]]}, VALID_HEADER)
def test_any_adapter_manifest_is_accepted_or_refused_with_adapter_invalid(config, header):
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "fuzzed"
        _write_adapter(folder, json.dumps(config), header)
        try:
            spec = validate_adapter(folder, base=BASE, max_lora_rank=16)
        except AdapterInvalid as err:
            assert err.message
        else:
            assert isinstance(spec, AdapterSpec) and spec.rank <= 16


@pytest.mark.parametrize(
    "config_text, header",
    [
        ("[" * 50_000, VALID_HEADER),  # regression: deep nesting raised RecursionError
        (json.dumps(VALID_ADAPTER_CONFIG), b"[" * 50_000),
        (json.dumps(VALID_ADAPTER_CONFIG), b"\xff\xfe not json"),
    ],
    ids=["deep-config", "deep-header", "binary-header"],
)
def test_unparseable_adapter_files_are_adapter_invalid(tmp_path, config_text, header):
    _write_adapter(tmp_path / "fuzzed", config_text, header)
    with pytest.raises(AdapterInvalid):
        validate_adapter(tmp_path / "fuzzed", base=BASE, max_lora_rank=16)


# --- requests -------------------------------------------------------------------------

def _request_fields(endpoint: Endpoint) -> list[str]:
    from deployments.api.request_checks import _request_model

    return sorted(_request_model(endpoint).model_fields)


COMPLETION = {"model": "poet", "prompt": "hi", "max_tokens": 4}
CHAT = {"model": "poet", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@SETTINGS
@given(st.sampled_from(list(Endpoint)), st.data())
def test_any_request_body_passes_or_fails_with_invalid_request(endpoint, data):
    valid = COMPLETION if endpoint is Endpoint.COMPLETIONS else CHAT
    body = data.draw(_mutated(valid, _request_fields(endpoint)) | st.dictionaries(st.text(max_size=12), json_values, max_size=5))
    try:
        requested_model(body)
        check_request(body, endpoint, max_model_len=512)
    except InvalidRequest as err:
        assert err.message


@SETTINGS
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
@example(b"[" * 100_000)  # regression: deep nesting raised RecursionError -> HTTP 500
@example(b'{"a":' * 100_000)
def test_any_body_bytes_parse_to_an_object_or_fail_with_invalid_request(raw):
    try:
        assert isinstance(parse_json_object(raw), dict)
    except InvalidRequest as err:
        assert err.message


@pytest.mark.parametrize(
    "config_text",
    ['{"peft_type": "LORA", "base_model_name_or_path": ["a", "list"], "r": 8, "target_modules": ["q_proj"]}', "[" * 50_000],
    ids=["unhashable-base-name", "deep-nesting"],
)
def test_one_malformed_adapter_does_not_break_the_store_for_everyone(tmp_path, demo_assets, base_info, config_text):
    """Regression: these raised TypeError / RecursionError out of the store's folder scan,
    so /v1/models and every request failed for every tenant because of one folder."""
    from adapters.store import LocalAdapterStore

    root = tmp_path / "adapters"
    shutil.copytree(demo_assets / "adapters", root)
    (root / "pirate" / "adapter_config.json").write_text(config_text)
    store = LocalAdapterStore(root, base=base_info, max_lora_rank=16)
    errors = {e.name: e.error for e in store.entries()}
    assert errors["pirate"] and errors["poet"] is None
    assert "poet" in {s.name for s in store.list_valid()}


@pytest.mark.parametrize(
    "endpoint, body, param",
    [
        (Endpoint.COMPLETIONS, {"model": "poet", "max_tokens": 4}, "prompt"),
        (Endpoint.COMPLETIONS, {**COMPLETION, "cache_salt": 0}, "cache_salt"),
        (Endpoint.COMPLETIONS, {**COMPLETION, "logprobs": []}, "logprobs"),
        (Endpoint.CHAT, {**CHAT, "top_logprobs": 1}, "top_logprobs"),
        (Endpoint.COMPLETIONS, {**COMPLETION, "structured_outputs": 0}, None),
        (Endpoint.CHAT, {**CHAT, "structured_outputs": 0}, None),
    ],
    ids=["no-prompt", "cache-salt-int", "logprobs-list", "top-logprobs-without-logprobs", "structured-outputs-int", "chat-structured-outputs-int"],
)
def test_bodies_that_crashed_vllm_validators_are_invalid_requests(endpoint, body, param):
    """Regression: each of these raised a non-ValueError out of vLLM's request model
    (VLLMValidationError, AttributeError), which the ingress answered with a 500."""
    with pytest.raises(InvalidRequest) as caught:
        check_request(body, endpoint, max_model_len=512)
    if param is not None:
        assert caught.value.param == param
