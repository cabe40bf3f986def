"""The demo skills are told apart by their answers: the proof that each request got its
own adapter (integration test_demo_skills.py) only works if no two tasks, and no plain
copy, give the same answer to the same prompt."""

import itertools

import pytest

from factory.demo_assets import DEMO_ADAPTERS
from factory.demo_tasks import TASKS, held_out_rows, task_rows


def test_every_demo_adapter_has_its_own_task():
    tasks = [a.task for a in DEMO_ADAPTERS]
    assert all(t in TASKS for t in tasks)
    assert len(set(tasks)) == len(tasks)


@pytest.mark.parametrize("a, b", list(itertools.permutations(TASKS.values(), 2)), ids=lambda t: t.name)
def test_another_task_almost_never_gives_the_same_answer(a, b):
    rows = held_out_rows(a, 200)
    words = [r["prompt"].split(": ", 1)[1].rstrip("\n") for r in rows]
    same = sum(b.apply(w) == r["completion"] for w, r in zip(words, rows))
    assert same / len(rows) <= 0.02


def test_copying_the_word_never_answers_a_held_out_row():
    for task in TASKS.values():
        for row in held_out_rows(task, 100):
            assert row["completion"] != row["prompt"].split(": ", 1)[1].rstrip("\n")


def test_examples_are_seeded_and_held_out_words_are_unseen_in_training():
    task = TASKS["rot13"]
    assert task_rows(task, 50, seed=3) == task_rows(task, 50, seed=3)
    trained = {r["prompt"] for a in DEMO_ADAPTERS for r in task_rows(TASKS[a.task], 2000, seed=a.seed)}
    held = [r["prompt"] for r in held_out_rows(task, 20)]
    assert sum(p in trained for p in held) <= 1  # random 3-9 letter words: collisions are rare
    assert TASKS["rot13"].apply("hello") == "uryyb" and TASKS["keypad"].apply("hello") == "43556"
