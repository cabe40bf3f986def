"""Read a JSONL training set and turn it into token ids with completion-only labels.

Two row shapes, one per line:
  {"prompt": "...", "completion": "..."}           served through /v1/completions
  {"messages": [{"role": ..., "content": ...}, ...]} served through /v1/chat/completions
The model learns only the completion (the last assistant message for chat rows) plus
the EOS that ends it, so it learns to answer and to stop, not to echo prompts. Prompts
are tokenized the way the serving path tokenizes them (a completions prompt with the
tokenizer's special tokens, a chat prompt rendered by the base's chat template), so
what was trained is what is served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from factory.errors import DatasetError

IGNORE_INDEX = -100  # label value the loss skips (prompt and padding tokens)
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    line: int
    prompt: str | None = None
    completion: str | None = None
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TokenizedExample:
    line: int
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


def _parse_row(row: object, where: str) -> Example:
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    line = int(where.rsplit(":", 1)[1])
    keys = set(row)
    if keys == {"prompt", "completion"}:
        for key in ("prompt", "completion"):
            if not isinstance(row[key], str):
                raise DatasetError(f"{where}: {key!r} must be a string, got {type(row[key]).__name__}")
        if not row["completion"]:
            raise DatasetError(f"{where}: 'completion' is empty; there is nothing to learn")
        return Example(line=line, prompt=row["prompt"], completion=row["completion"])
    if keys == {"messages"}:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise DatasetError(f"{where}: 'messages' must be a non-empty list")
        parsed = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or set(msg) != {"role", "content"}:
                raise DatasetError(f"{where}: messages[{i}] must be an object with exactly 'role' and 'content'")
            if msg["role"] not in _ROLES or not isinstance(msg["content"], str):
                raise DatasetError(f"{where}: messages[{i}] needs role in {list(_ROLES)} and string content")
            parsed.append((msg["role"], msg["content"]))
        if parsed[-1][0] != "assistant" or not parsed[-1][1]:
            raise DatasetError(f"{where}: the last message must be a non-empty 'assistant' message (the completion to learn)")
        if len(parsed) < 2:
            raise DatasetError(f"{where}: a chat row needs at least one message before the assistant's answer")
        return Example(line=line, messages=tuple(parsed))
    raise DatasetError(
        f"{where}: expected keys {{'prompt', 'completion'}} or {{'messages'}}, got {sorted(keys)}"
    )


def load_examples(path: str | Path) -> list[Example]:
    """Parse every row; the first bad row raises DatasetError naming `file:line`.
    Blank lines are skipped (line numbers still count them)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"dataset not found: {path}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err})") from None
    examples = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
        examples.append(_parse_row(row, where))
    if not examples:
        raise DatasetError(f"{path.name}: the dataset has no rows")
    return examples


def tokenize_example(example: Example, tokenizer, max_length: int, source: str = "dataset") -> TokenizedExample:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DatasetError("the base model's tokenizer has no EOS token; a completion could never stop")
    if example.messages:
        prompt_text = tokenizer.apply_chat_template(
            [{"role": r, "content": c} for r, c in example.messages[:-1]], tokenize=False, add_generation_prompt=True
        )
        # The template renders the BOS itself (as the chat endpoint does): add no more.
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        completion = example.messages[-1][1]
    else:
        prompt_ids = tokenizer(example.prompt)["input_ids"]
        completion = example.completion
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [eos]
    input_ids = tuple(prompt_ids) + tuple(completion_ids)
    if len(input_ids) > max_length:
        raise DatasetError(
            f"{source}:{example.line}: {len(input_ids)} tokens, above training.max_length {max_length}; "
            "shorten the row or raise max_length"
        )
    labels = (IGNORE_INDEX,) * len(prompt_ids) + tuple(completion_ids)
    return TokenizedExample(line=example.line, input_ids=input_ids, labels=labels)


def split(examples: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded shuffle, then the first ceil-ish share is the eval split (at least one
    row when eval_fraction > 0, and at least one row always left to train on)."""
    import random

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = 0 if eval_fraction == 0 else max(1, round(len(examples) * eval_fraction))
    if n_eval >= len(examples):
        raise DatasetError(
            f"the dataset has {len(examples)} row(s): too few to hold out {eval_fraction:.0%} for eval and still train"
        )
    eval_idx, train_idx = sorted(order[:n_eval]), sorted(order[n_eval:])
    return [examples[i] for i in train_idx], [examples[i] for i in eval_idx]
