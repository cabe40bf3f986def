"""`lorafleet top --once` against a running fleet (real Ray Serve, the fake engine):
every replica and the adapters it holds appear as `/fleet/replicas` reports them, in
the column of their tier."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from tests.conftest import REPO

ADAPTERS = ("poet", "pirate", "haiku", "translator")


def _table_rows(text: str, title: str, ruled: bool = True) -> list[list[str]]:
    """The rows of one of top's tables (rich box drawing): each row as its cells. In a
    `ruled` table (a rule between rows) a row spans lines, its cells joined with newlines;
    otherwise every line is a row."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows, current, header_done = [], None, False
    for line in lines[start + 1:]:
        if line.startswith(("┏", "┃")):
            continue
        if line.startswith("┡"):
            header_done = True
            current = None
            continue
        if not header_done:
            continue
        if line.startswith(("├", "└")):
            if current is not None:
                rows.append(current)
            current = None
            if line.startswith("└"):
                break
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if not ruled:
            rows.append(cells)
            continue
        if current is None:
            current = cells
        else:
            current = [f"{a}\n{b}".strip() for a, b in zip(current, cells)]
    return rows


def _residency(fleet) -> dict[str, tuple[set, set]]:
    return {r["replica_id"]: (set(r["gpu_resident"]), set(r["cpu_resident"]) - set(r["gpu_resident"]))
            for r in fleet.replicas()}


def test_top_once_shows_every_replica_and_its_resident_adapters_by_tier(fast_fleet):
    for i in range(12):  # give the replicas adapters to hold
        response = httpx.post(f"{fast_fleet.api}/completions", headers=fast_fleet.auth(),
                              json={"model": ADAPTERS[i % len(ADAPTERS)], "prompt": "hi", "max_tokens": 2}, timeout=30)
        assert response.status_code == 200, response.text
    time.sleep(1.5)  # a stats report after the requests
    before = _residency(fast_fleet)
    result = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "top", "--once", "--interval", "1", "--url", fast_fleet.base_url,
         "--api-key", fast_fleet.keys["admin"]],
        capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, "COLUMNS": "250"},
    )
    after = _residency(fast_fleet)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout  # piped: plain text
    rows = {row[0]: row for row in _table_rows(result.stdout, "replicas")}
    assert set(rows) == set(before) == set(after)
    held = 0
    for rid, (gpu, cpu) in after.items():
        gpu_cell, cpu_cell = rows[rid][2].split("\n"), rows[rid][3].split("\n")
        # Residency read before and after top's reads: what stayed put must be shown where it was.
        for name in gpu & before[rid][0]:
            assert name in gpu_cell, (rid, name, rows[rid])
            held += 1
        for name in cpu & before[rid][1]:
            assert name in cpu_cell, (rid, name, rows[rid])
            held += 1
    assert held >= 2  # the replicas did hold adapters: the check above was not vacuous
    adapters = {row[0] for row in _table_rows(result.stdout, "adapters", ruled=False)}
    assert set(ADAPTERS) <= adapters


def test_top_without_the_admin_key_says_what_it_needs_and_exits_1(fast_fleet):
    result = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "top", "--once", "--url", fast_fleet.base_url,
         "--api-key", fast_fleet.keys["acme"]],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode == 1
    assert "needs an admin key" in result.stderr
