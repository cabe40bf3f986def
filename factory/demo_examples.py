"""Show and score the demo skills on a running fleet (`lorafleet demo-examples`).

Greedy decoding (temperature 0) through the completions endpoint with the same
`"<task>: <word>\\n"` prompt the adapters were trained on. The score is exact match
on held-out words (a seed range no training set used).
"""

from __future__ import annotations

from factory.demo_tasks import TASKS, Task, held_out_rows

SHOWCASE_WORD = "fleet"
MAX_TOKENS = 16


def complete(base_url: str, model: str, prompt: str, *, timeout: float = 60.0) -> str:
    import httpx

    body = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
    response = httpx.post(f"{base_url.rstrip('/')}/v1/completions", json=body, timeout=timeout)
    response.raise_for_status()
    return response.json()["choices"][0]["text"]


def exact_match(outputs: list[str], rows: list[dict[str, str]]) -> float:
    return sum(out == row["completion"] for out, row in zip(outputs, rows, strict=True)) / len(rows)


def demo_skills(adapters) -> list[tuple[str, Task]]:
    """(adapter name, task) for every demo adapter trained on a skill."""
    return [(a.name, TASKS[a.task]) for a in adapters if a.task]


def showcase(base_url: str, adapters, base_model: str, word: str = SHOWCASE_WORD) -> list[str]:
    """One line per skill: the adapter's answer next to the base model's."""
    lines = []
    for name, task in demo_skills(adapters):
        prompt = task.prompt(word)
        lines.append(
            f"  {name:<14} {prompt.strip():<20} -> {complete(base_url, name, prompt)!r:<14}"
            f" (base model: {complete(base_url, base_model, prompt)!r}; {task.describe})"
        )
    return lines


def score_matrix(base_url: str, adapters, base_model: str, n: int) -> dict[str, dict[str, float]]:
    """{task: {model: exact match}} for the base and every skill adapter on `n` held-out rows per task."""
    skills = demo_skills(adapters)
    models = [base_model] + [name for name, _ in skills]
    matrix: dict[str, dict[str, float]] = {}
    for _, task in skills:
        rows = held_out_rows(task, n)
        matrix[task.name] = {m: exact_match([complete(base_url, m, r["prompt"]) for r in rows], rows) for m in models}
    return matrix
