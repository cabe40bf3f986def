"""Build the embedded demo: a tiny Llama-architecture base model and LoRA adapters.

Models cannot be downloaded here, so the project makes its own. The base is a tiny
Llama pretrained (by the model factory, factory/demo.py) only to copy text; each demo
adapter is trained by the factory on one character-level skill (factory/demo_tasks.py,
e.g. `rot13: hello` -> `uryyb`), so what an adapter does is visible in its output.
Everything is derived from fixed seeds on one CPU thread, so a rebuild gives
byte-identical weights; the build is cached under the output folder by a digest of
the recipe (`.recipe-sha256`) and skipped when the digest matches.

Shape choices: hidden 128 with head_dim 64 (vLLM's CPU attention kernels reject
head_dim 16), 2 layers, a byte-level vocabulary (any text round-trips). Adapters vary
rank (8 and 16) and target modules, so the fleet sees the variety real adapters have.

A second base (`base-wide/`, served as `lorafleet-tiny-wide`) shows a fleet serving two
bases of different shapes: hidden 192 (3 heads of 64), one shared key/value head
(grouped-query attention, so k_proj/v_proj are 192 -> 64), 3 layers; its own copy
pretraining and three skill adapters (`SECOND_ADAPTERS`) in the same adapter folder. An
adapter of one base does not fit the other's modules, so validation would refuse it on
the wrong base. It is cached under its own digest (`.recipe-wide-sha256`): adding it left
the first base's digest, and every cache of it, unchanged.
`build_adapter` still makes seeded *random* adapters: benchmarks use those when they
need hundreds of adapters and no skill.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

BASE_NAME = "lorafleet-tiny-llama"
SECOND_BASE_NAME = "lorafleet-tiny-wide"
SECOND_BASE_DIR = "base-wide"

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
    """`task` names a skill in factory/demo_tasks.py (trained); None means seeded random weights."""

    name: str
    seed: int
    rank: int
    target_modules: tuple[str, ...]
    task: str | None = None


ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")

# Ten skills, one per adapter (factory/demo_tasks.py), over ranks 8 and 16 and eight
# target-module sets. Every set includes an MLP projection: the skills map characters
# to other characters, which attention-only LoRA on this tiny base learns poorly (with
# 300 steps, caesar on attention + down_proj did not train at all, upper on q/v/down
# reached 70%). poet's skill was caesar until a machine with another instruction set
# trained it to nothing (eval loss 3.2, for 5 of 6 seeds tried; vowels: 0.002-0.004). The names predate the skills (tests and configs use them); the prompt tag
# says what each adapter does.
DEMO_ADAPTERS: tuple[DemoAdapter, ...] = (
    DemoAdapter("sql-helper", 1, 8, ("v_proj", "up_proj", "down_proj"), task="upper"),
    DemoAdapter("poet", 2, 16, ("v_proj", "o_proj", "up_proj", "down_proj"), task="vowels"),
    DemoAdapter("pirate", 3, 8, ATTENTION + MLP, task="mask"),
    DemoAdapter("legal-summary", 4, 16, MLP, task="atbash"),
    DemoAdapter("support-bot", 5, 8, ("q_proj", "k_proj", "v_proj", "down_proj"), task="next"),
    DemoAdapter("code-review", 6, 16, ATTENTION + MLP, task="leet"),
    DemoAdapter("translator", 7, 8, ("o_proj", "down_proj"), task="rot13"),
    DemoAdapter("math-tutor", 8, 16, ("q_proj", "v_proj", "up_proj"), task="keypad"),
    DemoAdapter("haiku", 9, 8, ("v_proj", "gate_proj", "down_proj"), task="shout"),
    DemoAdapter("medical-notes", 10, 16, ("k_proj", "o_proj", "down_proj"), task="prev"),
)


# The second base's adapters: a few, to keep the demo's build short (each trains 20-60 s).
SECOND_ADAPTERS: tuple[DemoAdapter, ...] = (
    DemoAdapter("wide-upper", 21, 8, ("v_proj", "up_proj", "down_proj"), task="upper"),
    DemoAdapter("wide-rot13", 22, 16, ("o_proj", "up_proj", "down_proj"), task="rot13"),
    DemoAdapter("wide-leet", 23, 8, ATTENTION + MLP, task="leet"),
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


def build_base_model(out: Path, shape: dict | None = None) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**(shape or _base_config_dict()), dtype="float32")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)  # random weights; build_demo_assets then pretrains them
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


RECIPE_FILE = ".recipe-sha256"  # the whole build is done (written last)
BASE_FILE = ".base-recipe-sha256"  # the base is pretrained for this recipe (adapters may still be missing)
SECOND_RECIPE_FILE = ".recipe-wide-sha256"  # the second base and its adapters are built (written last)


def _base_config_dict() -> dict:
    return dict(
        vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )


def demo_digest(adapters: tuple[DemoAdapter, ...] = DEMO_ADAPTERS, recipe=None) -> str:
    """The digest a build folder's markers hold: everything that decides its bytes."""
    from factory.demo import DEFAULT_RECIPE, recipe_digest

    return recipe_digest(_base_config_dict(), adapters, recipe or DEFAULT_RECIPE)


def _marked(path: Path, digest: str) -> bool:
    return path.is_file() and path.read_text().strip() == digest


def is_complete(out: str | Path, digest: str | None = None) -> bool:
    """True when `out` holds a finished build of this recipe (nothing to train)."""
    return _marked(Path(out) / RECIPE_FILE, digest or demo_digest())


def mark_complete(out: str | Path, digest: str | None = None) -> None:
    (Path(out) / RECIPE_FILE).write_text((digest or demo_digest()) + "\n")


def build_demo_base(out: str | Path, *, digest: str | None = None, recipe=None, log=print) -> bool:
    """Make `out/base` the pretrained base of this recipe; return False when it already was.

    A folder built for another recipe is removed first (its adapters were trained on
    another base). The base marker is written once the base is complete, so an
    interrupted build starts over, and a build interrupted while training adapters
    keeps its base (`lorafleet serve --demo` then trains only what is missing)."""
    import torch

    from factory.demo import DEFAULT_RECIPE, pretrain_base

    recipe = recipe or DEFAULT_RECIPE
    out = Path(out)
    digest = digest or demo_digest(recipe=recipe)
    if _marked(out / BASE_FILE, digest) and (out / "base" / "config.json").is_file():
        return False
    shutil.rmtree(out, ignore_errors=True)
    (out / "base").mkdir(parents=True)
    threads = torch.get_num_threads()
    try:
        build_tokenizer(out / "base")
        build_base_model(out / "base")
        log(f"lorafleet: pretraining the demo base to copy text ({recipe.pretrain_steps} steps)...")
        pretrain_base(out / "base", recipe, progress=False)
        _normalise_json(out / "base" / "config.json")
        (out / "base" / "generation_config.json").unlink(missing_ok=True)
    finally:
        torch.set_num_threads(threads)
    (out / BASE_FILE).write_text(digest + "\n")
    return True


def _second_base_config_dict() -> dict:
    return dict(
        vocab_size=VOCAB_SIZE, hidden_size=192, intermediate_size=384, num_hidden_layers=3,
        num_attention_heads=3, num_key_value_heads=1, head_dim=64, max_position_embeddings=2048,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )


def _build_second_base(out: Path, recipe, log) -> None:
    import torch

    from factory.demo import DEFAULT_RECIPE, pretrain_base, recipe_digest, train_demo_adapters

    recipe = recipe or DEFAULT_RECIPE
    digest = recipe_digest(_second_base_config_dict(), SECOND_ADAPTERS, recipe)
    marker = out / SECOND_RECIPE_FILE
    if marker.is_file() and marker.read_text().strip() == digest:
        return
    started = time.monotonic()
    base = out / SECOND_BASE_DIR
    shutil.rmtree(base, ignore_errors=True)
    for adapter in SECOND_ADAPTERS:
        shutil.rmtree(out / "adapters" / adapter.name, ignore_errors=True)
    base.mkdir(parents=True)
    threads = torch.get_num_threads()
    try:
        build_tokenizer(base)
        build_base_model(base, _second_base_config_dict())
        log(f"lorafleet: pretraining the second demo base to copy text ({recipe.pretrain_steps} steps)...")
        pretrain_base(base, recipe, progress=False)
        _normalise_json(base / "config.json")
        (base / "generation_config.json").unlink(missing_ok=True)
        log(f"lorafleet: training {len(SECOND_ADAPTERS)} adapters of the second base ({recipe.workers} at a time)...")
        train_demo_adapters(base, SECOND_BASE_NAME, SECOND_ADAPTERS, out / "adapters", out / "datasets", recipe, log=log)
    finally:
        torch.set_num_threads(threads)
    marker.write_text(digest + "\n")
    log(f"lorafleet: second demo base built in {time.monotonic() - started:.0f} s")


def build_demo_assets(out: str | Path, *, adapters: tuple[DemoAdapter, ...] = DEMO_ADAPTERS, recipe=None, log=print,
                      second_base: bool | None = None) -> Path:
    """Write `out/base/`, `out/adapters/<name>/` and `out/datasets/<name>.jsonl`, then the
    second base (`out/base-wide/` and its adapters beside the first's); return `out`.
    `second_base` None: only with the demo's own adapters (a custom set is a test's or a
    benchmark's, which needs the first base alone).

    Each part is skipped when its digest file matches its recipe (a cold build trains for
    a few minutes). Digest files are written last, so an interrupted build is redone."""
    out = Path(out)
    _build_first_base(out, adapters, recipe, log)
    if second_base or (second_base is None and adapters == DEMO_ADAPTERS):
        _build_second_base(out, recipe, log)
    return out


def _build_first_base(out: Path, adapters: tuple[DemoAdapter, ...], recipe, log) -> None:
    """`out/base/`, its adapters and datasets; the second base's files are left alone."""
    import torch

    from factory.demo import DEFAULT_RECIPE, train_demo_adapters

    recipe = recipe or DEFAULT_RECIPE
    out = Path(out)
    digest = demo_digest(adapters, recipe)
    if is_complete(out, digest):
        return
    started = time.monotonic()
    build_demo_base(out, digest=digest, recipe=recipe, log=log)  # keeps a base pretrained for this recipe
    for adapter in adapters:  # a half-trained (or half-published) set: train them all
        shutil.rmtree(out / "adapters" / adapter.name, ignore_errors=True)
    threads = torch.get_num_threads()
    try:
        random_ones = [a for a in adapters if a.task is None]
        for adapter in random_ones:
            build_adapter(out / "base", adapter, out / "adapters" / adapter.name)
        skilled = tuple(a for a in adapters if a.task is not None)
        if skilled:
            log(f"lorafleet: training {len(skilled)} demo adapters ({recipe.workers} at a time)...")
            train_demo_adapters(out / "base", BASE_NAME, skilled, out / "adapters", out / "datasets", recipe, log=log)
    finally:
        torch.set_num_threads(threads)
    mark_complete(out, digest)
    log(f"lorafleet: demo assets built in {time.monotonic() - started:.0f} s")
