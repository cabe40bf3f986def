"""The training config schema (`lorafleet train CONFIG.yaml`).

Strict like the serving config (deployments/config.py): frozen, `extra="forbid"`,
every field described, so a typo such as `learning_rat` fails at load naming the
field instead of silently training with a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError, field_validator

from adapters.config_files import field_problems, read_yaml
from adapters.validation import ADAPTER_NAME_PATTERN, PROJECTION_MODULES
from factory.errors import TrainConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BaseModelSpec(_Strict):
    source: str = Field(description="Base model to train on: a local Hugging Face model folder or a hub id. "
                        "Relative paths resolve against the config file's folder.")
    name: str | None = Field(default=None, description="Name written as the adapter's `base_model_name_or_path`; "
                             "use the fleet's `model.served_name` so the fleet accepts the adapter. Default: `source`.")

    @property
    def recorded_name(self) -> str:
        return self.name or self.source


class DatasetSpec(_Strict):
    path: str = Field(description="JSONL file, one example per line: {\"prompt\", \"completion\"} or "
                      "{\"messages\": [{\"role\", \"content\"}, ...]} ending with an assistant message.")
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0,
                                 description="Share of rows held out (after a seeded shuffle) to report the eval loss.")


class LoraSpec(_Strict):
    rank: PositiveInt = Field(default=8, le=256, description="LoRA rank r; the fleet refuses ranks above its max_lora_rank.")
    alpha: PositiveFloat = Field(default=16.0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input during training.")
    target_modules: tuple[str, ...] = Field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"), min_length=1,
        description=f"Projection modules to adapt; only {', '.join(PROJECTION_MODULES)} are allowed "
        "(the fleet serves no LoRA on lm_head or embeddings).",
    )

    @field_validator("target_modules")
    @classmethod
    def _projections_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = sorted(set(value) - set(PROJECTION_MODULES))
        if bad:
            raise ValueError(f"not a projection module: {bad}; allowed: {', '.join(PROJECTION_MODULES)}")
        return tuple(sorted(set(value)))


class TrainingSpec(_Strict):
    epochs: PositiveInt = Field(default=3, description="Passes over the training split.")
    learning_rate: PositiveFloat = Field(default=2e-3, description="Peak AdamW learning rate (linear warm-up, cosine decay).")
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0, description="Share of the steps spent warming up.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay on the LoRA weights.")
    max_grad_norm: PositiveFloat = Field(default=1.0, description="Gradient clipping norm.")
    batch_size: PositiveInt = Field(default=16, description="Examples per optimizer step.")
    max_length: PositiveInt = Field(default=512, description="Longest example in tokens (prompt + completion + EOS); "
                                    "a longer row is an error naming its line, never silently truncated.")
    seed: NonNegativeInt = Field(default=0, description="Seeds the split, the shuffles, LoRA init and dropout: "
                                 "same seed, same data, same machine -> byte-identical adapter.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="`auto` trains on a GPU when one is present.")


class OutputSpec(_Strict):
    dir: str = Field(description="Folder that receives `<adapter_name>/` (created). Relative to the config file's folder.")
    adapter_name: str = Field(pattern=ADAPTER_NAME_PATTERN.pattern, description="Adapter name (the `model` clients request).")


class TrainConfig(_Strict):
    base_model: BaseModelSpec
    dataset: DatasetSpec
    lora: LoraSpec = LoraSpec()
    training: TrainingSpec = TrainingSpec()
    output: OutputSpec

    @property
    def adapter_dir(self) -> Path:
        return Path(self.output.dir) / self.output.adapter_name

    def with_paths_resolved(self, base_dir: Path) -> "TrainConfig":
        """Dataset and output paths resolve against `base_dir`; the base model too when it
        names an existing folder or starts with '.', otherwise it stays a hub id."""

        def local(value: str) -> str:
            return value if Path(value).is_absolute() else str((base_dir / value).resolve())

        source = self.base_model.source
        candidate = base_dir / source
        if not Path(source).is_absolute() and (source.startswith(".") or candidate.exists()):
            source = str(candidate.resolve())
        return self.model_copy(update={
            "base_model": self.base_model.model_copy(update={"source": source}),
            "dataset": self.dataset.model_copy(update={"path": local(self.dataset.path)}),
            "output": self.output.model_copy(update={"dir": local(self.output.dir)}),
        })


def _format(err: ValidationError) -> str:
    return "invalid training config:\n" + "\n".join(f"  {problem}" for problem in field_problems(err))


def parse_train_config(data: object, base_dir: Path | None = None) -> TrainConfig:
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as err:
        raise TrainConfigError(_format(err)) from None
    return config.with_paths_resolved(base_dir) if base_dir else config


def load_train_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    return parse_train_config(read_yaml(path, TrainConfigError, "training config"), base_dir=path.resolve().parent)
