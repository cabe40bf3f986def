"""Hostile uploads against a live ingress (real Ray Serve, the product's registry routes):
each probe gets its 400/413 naming the problem, and the ingress process's memory grows
by a bounded amount. Before: an archive whose GNU long-name header held a 24 MB name
cost the ingress +97 MB and answered 500; 60,000 folders were accepted (201)."""

from __future__ import annotations

import os

import httpx
import psutil
import pytest

from tests import hostile_archives

MB = 1024 * 1024
GROWTH_BOUND = 32 * MB  # per probe; the naive reads cost 100-800 MB


def _ingress() -> psutil.Process:
    [ingress] = [p for p in psutil.Process(os.getpid()).children(recursive=True)
                 if any("ServeReplica:lorafleet:Ingress" in part for part in p.cmdline())]
    return ingress


@pytest.mark.parametrize("name, builder, status, says", [
    ("gnu long name, 24 MB", hostile_archives.gnu_long_name, 400, "name"),
    ("pax path, 24 MB", hostile_archives.pax_long_path, 400, "header"),
    ("60,000 folders", hostile_archives.many_directories, 413, "max_files"),
    ("a file and a folder of one path", hostile_archives.file_then_folder, 400, "collide"),
])
def test_a_hostile_archive_is_refused_by_the_live_ingress_in_bounded_memory(fast_fleet, name, builder, status, says):
    archive = builder()
    ingress = _ingress()
    before = ingress.memory_info().rss
    response = httpx.post(f"{fast_fleet.api}/adapters", data={"name": "probe"}, headers=fast_fleet.auth("acme"),
                          files={"file": ("a.tar.gz", archive, "application/gzip")}, timeout=120)
    growth = ingress.memory_info().rss - before
    assert response.status_code == status, (name, response.text)
    error = response.json()["error"]
    assert says in error["message"].lower(), (name, error)
    assert growth < GROWTH_BOUND, f"{name}: the ingress grew by {growth / MB:.0f} MB"
    listed = httpx.get(f"{fast_fleet.api}/adapters", headers=fast_fleet.auth("acme"), timeout=30).json()["data"]
    assert "probe" not in {a["id"] for a in listed}
