"""The demo adapters do what they were trained for, through the whole cluster.

Each adapter was trained by the factory on one character-level skill (`rot13: hello`
-> `uryyb`). Served by the real fleet and asked with the official `openai` client at
temperature 0, each must get >= 90% exact match on held-out words of its own task,
while the base model and every other adapter get <= 10% on it: proof that the skill
lives in the adapter and that every request was served by the adapter it named.
"""

import pytest

from factory.demo_assets import DEMO_ADAPTERS
from factory.demo_examples import MAX_TOKENS, exact_match
from factory.demo_tasks import TASKS, held_out_rows

HELD_OUT = 20
OWN_MIN, OTHERS_MAX = 0.9, 0.1


def _answers(client, model, rows):
    # One request per model and task: the completions API takes a list of prompts.
    response = client.completions.create(model=model, prompt=[r["prompt"] for r in rows], max_tokens=MAX_TOKENS, temperature=0)
    choices = sorted(response.choices, key=lambda c: c.index)
    return [c.text for c in choices]


@pytest.fixture(scope="module")
def scores(fleet, client):
    models = [fleet.base_model] + [a.name for a in DEMO_ADAPTERS]
    table = {}
    for adapter in DEMO_ADAPTERS:
        rows = held_out_rows(TASKS[adapter.task], HELD_OUT)
        table[adapter.name] = {m: exact_match(_answers(client, m, rows), rows) for m in models}
    for name, row in table.items():  # shown with `pytest -s`: the numbers in the README's skills table
        best_other = max(v for m, v in row.items() if m != name)
        print(f"demo skill {name:<14} own {row[name]:.0%}  best other {best_other:.0%}  base {row[fleet.base_model]:.0%}")
    return table


@pytest.mark.parametrize("adapter", DEMO_ADAPTERS, ids=lambda a: a.name)
def test_each_adapter_masters_its_own_task_and_nobody_else_does(fleet, scores, adapter):
    row = scores[adapter.name]
    assert row[adapter.name] >= OWN_MIN, f"{adapter.name} on its task {adapter.task!r}: {row}"
    others = {m: s for m, s in row.items() if m != adapter.name}
    assert max(others.values()) <= OTHERS_MAX, f"on {adapter.task!r} other models scored: {others}"


def test_the_answer_stops_at_eos(client):
    adapter = DEMO_ADAPTERS[0]
    response = client.completions.create(model=adapter.name, prompt=TASKS[adapter.task].prompt("hello"), max_tokens=MAX_TOKENS, temperature=0)
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].text == TASKS[adapter.task].apply("hello")


def test_demo_examples_show_one_line_per_adapter_with_its_answer(fleet, capsys):
    """What `make demo` (serve --demo-examples) and `lorafleet demo-examples` print."""
    from deployments.cli import main
    from factory.demo_examples import SHOWCASE_WORD

    assert main(["demo-examples", "--url", fleet.base_url]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len(lines) == len(DEMO_ADAPTERS)
    for line, adapter in zip(lines, DEMO_ADAPTERS):
        assert line.split()[0] == adapter.name
        assert f"-> {TASKS[adapter.task].apply(SHOWCASE_WORD)!r}" in line
