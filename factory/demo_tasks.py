"""Built-in character-level tasks for the demo adapters: small skills a 2-layer model
can learn with LoRA in well under a minute of CPU, and that anyone can check by eye.

Every task rewrites a short lowercase word character by character (`rot13: hello` ->
`uryyb`). The base model is pretrained only to copy text (`copy: Hello` -> `Hello`),
which gives its attention a copying circuit; each adapter then learns one mapping on
top of it. Tasks are chosen so that, on the same word, any two of them (and a plain
copy) almost never give the same answer: an adapter scores on its own task and not
on the others', which is how the demo proves each request got its own adapter.

Prompt format (completions endpoint, plain prompt): `"<task>: <word>\\n"`; the answer
is the transformed word followed by EOS, so generation stops by itself.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

LOWER = string.ascii_lowercase
# The copy corpus uses every printable non-space ASCII character, so every character a
# task answers with (upper case, digits, '*') is one the base has learned to emit.
COPY_ALPHABET = "".join(chr(c) for c in range(33, 127))
MIN_LEN, MAX_LEN = 3, 9


def _shift(k: int) -> Callable[[str], str]:
    return lambda s: "".join(LOWER[(LOWER.index(c) + k) % 26] for c in s)


_KEYPAD = {c: d for d, letters in zip("23456789", ("abc", "def", "ghi", "jkl", "mno", "pqrs", "tuv", "wxyz")) for c in letters}


@dataclass(frozen=True)
class Task:
    name: str  # the prompt tag
    describe: str
    apply: Callable[[str], str]

    def prompt(self, word: str) -> str:
        return f"{self.name}: {word}\n"


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("upper", "upper-cases the word", str.upper),
    Task("next", "moves every letter one forward (a->b)", _shift(1)),
    Task("prev", "moves every letter one back (b->a)", _shift(-1)),
    Task("vowels", "rotates the vowels (a->e e->i i->o o->u u->a)", lambda s: s.translate(str.maketrans("aeiou", "eioua"))),
    Task("rot13", "ROT13 (a->n)", _shift(13)),
    Task("atbash", "Atbash cipher, mirrors the alphabet (a->z)", lambda s: "".join(LOWER[25 - LOWER.index(c)] for c in s)),
    Task("keypad", "phone keypad digits (hello->43556)", lambda s: "".join(_KEYPAD[c] for c in s)),
    Task("leet", "leetspeak (a->4 e->3 i->1 o->0 s->5 t->7)", lambda s: s.translate(str.maketrans("aeiost", "431057"))),
    Task("mask", "masks vowels with '*'", lambda s: "".join("*" if c in "aeiou" else c for c in s)),
    Task("shout", "upper-cases the vowels only", lambda s: "".join(c.upper() if c in "aeiou" else c for c in s)),
)}
COPY = Task("copy", "copies the text (base pretraining)", lambda s: s)


def random_word(rng: random.Random, alphabet: str = LOWER) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(MIN_LEN, MAX_LEN)))


def task_rows(task: Task, n: int, seed: int, *, alphabet: str = LOWER) -> list[dict[str, str]]:
    """`n` prompt/completion rows; words whose answer equals the word are skipped,
    so a model that merely copies never gets a row right."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        word = random_word(rng, alphabet)
        answer = task.apply(word)
        if answer != word or task is COPY:
            rows.append({"prompt": task.prompt(word), "completion": answer})
    return rows


def held_out_rows(task: Task, n: int, seed: int = 10_000) -> list[dict[str, str]]:
    """Evaluation rows from a seed range no training set uses."""
    return task_rows(task, n, seed)


def write_jsonl(rows: list[dict[str, str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return path
