"""The fix for vLLM's PyTorch LoRA kernels: tokens without a LoRA (index -1) get none.

Unpatched, `lora_weights[-1]` silently applies the engine's last LoRA slot to
base-model tokens batched with adapter requests (found by the fleet's
adapter-correctness test)."""

import pytest
import torch

from deployments.engine.vllm_plugin import mask_negative_lora_indices

from vllm.lora.ops.torch_ops import lora_ops  # the module the fix targets: required, never skipped


def _shrink_case():
    torch.manual_seed(0)
    x = torch.randn(3, 8)
    weights = torch.randn(2, 1, 4, 8)  # 2 slots, rank 4, hidden 8
    indices = torch.tensor([0, -1, 1])
    return x, weights, indices


def test_unpatched_kernel_applies_the_last_slot_to_base_tokens():
    """Documents the upstream bug this patch exists for (fails once vLLM fixes it)."""
    x, weights, indices = _shrink_case()
    out = torch.zeros(3, 4)
    original = getattr(lora_ops.bgmv_shrink, "__wrapped__", lora_ops.bgmv_shrink)
    original(x, weights, out, indices, 1.0)
    assert out[1].abs().sum() > 0


@pytest.mark.parametrize("kernel_name", ["bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"])
def test_patched_kernels_give_base_tokens_no_lora_and_keep_lora_tokens_exact(kernel_name):
    kernel = getattr(lora_ops, kernel_name)
    kernel = getattr(kernel, "__wrapped__", kernel)
    patched = mask_negative_lora_indices(kernel)
    torch.manual_seed(1)
    indices = torch.tensor([0, -1, 1])
    if kernel_name == "bgmv_shrink":
        inputs, weights, shape, extra = torch.randn(3, 8), torch.randn(2, 1, 4, 8), (3, 4), (1.0,)
    elif kernel_name == "bgmv_expand":
        inputs, weights, shape, extra = torch.randn(3, 4), torch.randn(2, 1, 8, 4), (3, 8), (True,)
    else:
        inputs, weights, shape, extra = torch.randn(3, 4), torch.randn(2, 1, 8, 4), (3, 16), (8, 8, True)
    expected, got = torch.zeros(shape), torch.zeros(shape)
    kernel(inputs, weights, expected, indices, *extra)
    patched(inputs, weights, got, indices, *extra)
    assert torch.all(got[1] == 0)
    assert torch.allclose(got[[0, 2]], expected[[0, 2]])


def test_plugin_is_registered_for_vllm_and_idempotent(monkeypatch):
    from importlib.metadata import entry_points

    from deployments.engine.vllm_plugin import plugin_environment, register

    names = {ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert "deployments.engine.vllm_plugin:register" in names
    monkeypatch.setenv(*next(iter(plugin_environment().items())))
    register()
    first = lora_ops.bgmv_shrink
    register()
    assert lora_ops.bgmv_shrink is first


def test_the_plugin_leaves_a_vllm_that_is_not_lorafleets_alone(monkeypatch):
    """Another vLLM in the same environment (no marker) gets neither the kernel patch
    nor the emulated slow reads, whatever its environment says."""
    from vllm.lora.worker_manager import WorkerLoRAManager

    from deployments.engine import vllm_plugin

    kernels = {k: getattr(lora_ops, k) for k in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")}
    for name, kernel in kernels.items():
        monkeypatch.setattr(lora_ops, name, getattr(kernel, "__wrapped__", kernel))
    original = WorkerLoRAManager._load_adapter
    monkeypatch.setattr(WorkerLoRAManager, "_load_adapter", getattr(original, "__wrapped__", original))
    monkeypatch.delenv(vllm_plugin.PLUGIN_ENV, raising=False)
    monkeypatch.setenv("LORAFLEET_EMULATED_ADAPTER_READ_MS", "30")  # the old ambient switch: ignored now
    vllm_plugin.register()
    assert not vllm_plugin.plugin_state()["applied"]
    assert not hasattr(WorkerLoRAManager._load_adapter, "__wrapped__")
    monkeypatch.setenv(vllm_plugin.PLUGIN_ENV, vllm_plugin.plugin_environment()[vllm_plugin.PLUGIN_ENV])
    vllm_plugin.register()
    assert vllm_plugin.plugin_state() == {"applied": True, "version_ok": True, "vllm_version": vllm_plugin.plugin_state()["vllm_version"]}


def test_the_plugin_reports_when_it_was_written_for_another_vllm(monkeypatch, caplog):
    import vllm

    from deployments.engine import vllm_plugin

    monkeypatch.setenv(vllm_plugin.PLUGIN_ENV, vllm_plugin.plugin_environment()[vllm_plugin.PLUGIN_ENV])
    monkeypatch.setattr(vllm, "__version__", "0.99.1")
    with caplog.at_level("WARNING"):
        vllm_plugin.register()
    assert vllm_plugin.plugin_state()["version_ok"] is False
    assert "written for vLLM 0.32." in caplog.text


def test_emulated_read_delay_blocks_before_the_real_read(monkeypatch):
    from deployments.engine import vllm_plugin

    calls = []
    monkeypatch.setattr(vllm_plugin.time, "sleep", lambda s: calls.append(("sleep", s)))

    def load_adapter(self, request):
        calls.append(("load", request))
        return "model"

    delayed = vllm_plugin.delay_adapter_reads(load_adapter, 0.03)
    assert delayed(object(), "req") == "model"
    assert calls == [("sleep", 0.03), ("load", "req")]
    assert vllm_plugin.delay_adapter_reads(delayed, 0.03) is delayed  # plugins load more than once


def test_emulated_reads_come_from_the_engines_config_not_the_environment(monkeypatch):
    from vllm.lora.worker_manager import WorkerLoRAManager

    from deployments.engine import vllm_plugin

    original = WorkerLoRAManager._load_adapter
    monkeypatch.setattr(WorkerLoRAManager, "_load_adapter", getattr(original, "__wrapped__", original))
    plain = WorkerLoRAManager._load_adapter
    monkeypatch.setenv(vllm_plugin.PLUGIN_ENV, vllm_plugin.plugin_environment(emulated_read_ms=0)[vllm_plugin.PLUGIN_ENV])
    vllm_plugin.register()
    assert WorkerLoRAManager._load_adapter is plain
    monkeypatch.setenv(vllm_plugin.PLUGIN_ENV, vllm_plugin.plugin_environment(emulated_read_ms=30)[vllm_plugin.PLUGIN_ENV])
    vllm_plugin.register()
    assert WorkerLoRAManager._load_adapter.__wrapped__ is plain


def test_replica_environment_carries_the_marker_and_the_emulated_read_time(demo_assets):
    import json

    from deployments.config import parse_config
    from deployments.engine.vllm_engine import engine_environment
    from deployments.engine.vllm_plugin import PLUGIN_ENV

    model = {"source": str(demo_assets / "base"), "served_name": "base"}
    base = {"model": model, "adapters": {"uri": str(demo_assets / "adapters")}}
    assert json.loads(engine_environment(parse_config(base))[PLUGIN_ENV]) == {"emulated_read_ms": 0}
    slow = parse_config({**base, "adapters": {**base["adapters"], "fetch_latency_ms": 30}})
    assert json.loads(engine_environment(slow)[PLUGIN_ENV]) == {"emulated_read_ms": 30}
