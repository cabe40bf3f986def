"""Training data: both row shapes, completion-only labels, errors that name the line."""

import json

import pytest

from factory.dataset import IGNORE_INDEX, Example, load_examples, split, tokenize_example
from factory.errors import DatasetError


def _write(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_base))


def test_both_row_shapes_load_and_blank_lines_keep_numbering(tmp_path):
    path = _write(tmp_path, [
        {"prompt": "upper: abc\n", "completion": "ABC"},
        "",
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "HI"}]},
    ])
    first, chat = load_examples(path)
    assert (first.line, first.prompt, first.completion) == (1, "upper: abc\n", "ABC")
    assert chat.line == 3 and chat.messages == (("user", "hi"), ("assistant", "HI"))


@pytest.mark.parametrize(
    "row, message",
    [
        ("{not json", "data.jsonl:2: not valid JSON"),
        ("[1, 2]", "data.jsonl:2: a row must be a JSON object"),
        ({"prompt": "p"}, "data.jsonl:2: expected keys"),
        ({"prompt": "p", "completion": "c", "id": 7}, "data.jsonl:2: expected keys"),
        ({"prompt": "p", "completion": 5}, "data.jsonl:2: 'completion' must be a string"),
        ({"prompt": "p", "completion": ""}, "data.jsonl:2: 'completion' is empty"),
        ({"messages": []}, "data.jsonl:2: 'messages' must be a non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "data.jsonl:2: the last message must be"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "data.jsonl:2: a chat row needs"),
        ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "data.jsonl:2: messages\\[0\\]"),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}, "data.jsonl:2: messages\\[0\\]"),
    ],
)
def test_malformed_rows_name_their_line(tmp_path, row, message):
    path = _write(tmp_path, [{"prompt": "ok", "completion": "fine"}, row])
    with pytest.raises(DatasetError, match=message):
        load_examples(path)


def test_empty_missing_and_non_utf8_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="no rows"):
        load_examples(empty)
    with pytest.raises(DatasetError, match="not found"):
        load_examples(tmp_path / "missing.jsonl")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_examples(binary)


def test_labels_cover_only_the_completion_and_its_eos(tokenizer):
    row = tokenize_example(Example(line=1, prompt="upper: abc\n", completion="ABC"), tokenizer, 64)
    prompt_ids = tokenizer("upper: abc\n")["input_ids"]  # what the completions endpoint feeds the model
    assert row.input_ids[: len(prompt_ids)] == tuple(prompt_ids)
    assert row.labels[: len(prompt_ids)] == (IGNORE_INDEX,) * len(prompt_ids)
    completion = row.labels[len(prompt_ids):]
    assert completion[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(completion[:-1]) == "ABC"


def test_chat_rows_use_the_chat_template_and_learn_only_the_last_answer(tokenizer):
    messages = (("user", "hi"), ("assistant", "HI"))
    row = tokenize_example(Example(line=1, messages=messages), tokenizer, 64)
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert row.input_ids[0] == tokenizer.bos_token_id and row.input_ids[1] != tokenizer.bos_token_id  # one BOS
    assert tokenizer.decode(row.input_ids[: len(prompt_ids)]).endswith("<|assistant|>\n")
    assert [t for t in row.labels if t != IGNORE_INDEX] == tokenizer("HI", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_too_long_rows_are_errors_not_silent_truncation(tokenizer):
    with pytest.raises(DatasetError, match="data.jsonl:7: .* above training.max_length 8"):
        tokenize_example(Example(line=7, prompt="a long prompt", completion="x"), tokenizer, 8, source="data.jsonl")


def test_split_is_seeded_and_keeps_rows_to_train_on():
    rows = list(range(20))
    train, held = split(rows, 0.1, seed=3)
    assert len(held) == 2 and sorted(train + held) == rows
    assert split(rows, 0.1, seed=3) == (train, held)
    assert split(rows, 0.1, seed=4) != (train, held)
    assert split(rows, 0.0, seed=3) == (rows, [])
    with pytest.raises(DatasetError, match="too few"):
        split([1], 0.5, seed=0)
