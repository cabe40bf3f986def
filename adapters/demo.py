"""Build the embedded demo: a tiny Llama-architecture base model and LoRA adapters.

Models cannot be downloaded here, so the project makes its own. Everything is
derived from fixed seeds and written with sorted keys, so running the builder twice
gives byte-identical files (tests rely on it to cache assets safely).

Shape choices: hidden 128 with head_dim 64 (vLLM's CPU attention kernels reject
head_dim 16), 2 layers, a byte-level vocabulary (no training needed, any text
round-trips). Adapters vary seed, rank (8 and 16) and target modules, so the fleet
sees the variety real adapters have.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

BASE_NAME = "lorafleet-tiny-llama"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
VOCAB_SIZE = 320  # 4 specials + 256 bytes, padded to a multiple of 64


@dataclass(frozen=True)
class DemoAdapter:
    name: str
    seed: int
    rank: int
    target_modules: tuple[str, ...]


ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")

DEMO_ADAPTERS: tuple[DemoAdapter, ...] = (
    DemoAdapter("sql-helper", 1, 8, ("q_proj", "v_proj")),
    DemoAdapter("poet", 2, 16, ATTENTION),
    DemoAdapter("pirate", 3, 8, ATTENTION + MLP),
    DemoAdapter("legal-summary", 4, 16, MLP),
    DemoAdapter("support-bot", 5, 8, ("q_proj", "k_proj", "v_proj")),
    DemoAdapter("code-review", 6, 16, ATTENTION + MLP),
    DemoAdapter("translator", 7, 8, ("o_proj", "down_proj")),
    DemoAdapter("math-tutor", 8, 16, ("q_proj", "v_proj", "up_proj")),
    DemoAdapter("haiku", 9, 8, ("v_proj", "gate_proj")),
    DemoAdapter("medical-notes", 10, 16, ("k_proj", "o_proj", "down_proj")),
)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def build_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))


def build_base_model(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        dtype="float32",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    # Default init (std 0.02) gives nearly uniform next-token distributions; a wider
    # output layer makes the base model's preferences (and adapters' shifts) visible.
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        model.lm_head.weight.normal_(0.0, 0.2, generator=gen)
    model.save_pretrained(str(out), safe_serialization=True)
    # Drop the generation defaults transformers writes: vLLM would apply them to
    # every request and they are not part of the model's contract here.
    (out / "generation_config.json").unlink(missing_ok=True)
    _normalise_json(out / "config.json")


def _normalise_json(path: Path) -> None:
    _write_json(path, json.loads(path.read_text()))


def build_adapter(base_dir: Path, spec: DemoAdapter, out: Path) -> None:
    """A peft LoRA with seeded random A and B (both non-zero, so it changes outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    lora = LoraConfig(
        r=spec.rank,
        lora_alpha=2 * spec.rank,
        target_modules=list(spec.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    gen = torch.Generator().manual_seed(1000 + spec.seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "lora_A" in name:
                param.normal_(0.0, 1.0 / param.shape[1] ** 0.5, generator=gen)
            elif "lora_B" in name:
                param.normal_(0.0, 0.5 / param.shape[1] ** 0.5, generator=gen)
    model.save_pretrained(str(out), safe_serialization=True)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = BASE_NAME
    config["target_modules"] = sorted(config["target_modules"])  # peft writes a set: order varies by hash seed
    _write_json(config_path, config)
    (out / "README.md").unlink(missing_ok=True)  # peft's model-card template; not part of the artifact


def build_demo_assets(out: str | Path, *, adapters: tuple[DemoAdapter, ...] = DEMO_ADAPTERS) -> Path:
    """Write `out/base/` and `out/adapters/<name>/`; return `out`. Idempotent and deterministic."""
    import torch

    torch.use_deterministic_algorithms(True)
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "base").mkdir(parents=True)
    build_tokenizer(tmp / "base")
    build_base_model(tmp / "base")
    for adapter in adapters:
        build_adapter(tmp / "base", adapter, tmp / "adapters" / adapter.name)
    # Publish atomically: a half-built asset folder is never mistaken for a finished one.
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
