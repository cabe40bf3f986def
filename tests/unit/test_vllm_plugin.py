"""The fix for vLLM's PyTorch LoRA kernels: tokens without a LoRA (index -1) get none.

Unpatched, `lora_weights[-1]` silently applies the engine's last LoRA slot to
base-model tokens batched with adapter requests (found by the fleet's
adapter-correctness test)."""

import pytest
import torch

from deployments.engine.vllm_plugin import mask_negative_lora_indices

lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")


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


def test_plugin_is_registered_for_vllm_and_idempotent():
    from importlib.metadata import entry_points

    from deployments.engine.vllm_plugin import register

    names = {ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert "deployments.engine.vllm_plugin:register" in names
    register()
    first = lora_ops.bgmv_shrink
    register()
    assert lora_ops.bgmv_shrink is first


def test_emulated_read_delay_blocks_before_the_real_read(monkeypatch):
    from deployments.engine import vllm_plugin as vllm_patches

    calls = []
    monkeypatch.setattr(vllm_patches.time, "sleep", lambda s: calls.append(("sleep", s)))

    def load_adapter(self, request):
        calls.append(("load", request))
        return "model"

    delayed = vllm_patches.delay_adapter_reads(load_adapter, 0.03)
    assert delayed(object(), "req") == "model"
    assert calls == [("sleep", 0.03), ("load", "req")]
    assert vllm_patches.delay_adapter_reads(delayed, 0.03) is delayed  # plugins load more than once


def test_emulated_reads_only_when_the_environment_asks(monkeypatch):
    from vllm.lora.worker_manager import WorkerLoRAManager

    from deployments.engine import vllm_plugin as vllm_patches

    original = WorkerLoRAManager._load_adapter
    monkeypatch.setattr(WorkerLoRAManager, "_load_adapter", original)
    monkeypatch.delenv(vllm_patches.EMULATED_READ_ENV, raising=False)
    vllm_patches.register()
    assert WorkerLoRAManager._load_adapter is original
    monkeypatch.setenv(vllm_patches.EMULATED_READ_ENV, "30")
    vllm_patches.register()
    assert WorkerLoRAManager._load_adapter is not original
    assert WorkerLoRAManager._load_adapter.__wrapped__ is original


def test_replica_environment_carries_the_emulated_read_time(demo_assets):
    from deployments.config import parse_config
    from deployments.engine.vllm_engine import engine_environment
    from deployments.engine.vllm_plugin import EMULATED_READ_ENV

    model = {"source": str(demo_assets / "base"), "served_name": "base"}
    base = {"model": model, "adapters": {"uri": str(demo_assets / "adapters")}}
    assert EMULATED_READ_ENV not in engine_environment(parse_config(base))
    slow = parse_config({**base, "adapters": {**base["adapters"], "fetch_latency_ms": 30}})
    assert engine_environment(slow)[EMULATED_READ_ENV] == "30"
