"""The live placement controller: demand in, a plan out, replicas holding their share."""

import time

import httpx

ADAPTERS = ["poet", "pirate", "haiku", "translator", "sql-helper", "code-review"]


def _get(fleet, path):
    return httpx.get(f"{fleet.base_url}{path}", timeout=30).json()


def test_planned_placement_shows_up_in_the_replicas_resident_sets(fleet):
    # Demand: a skewed mix over a few adapters, sent for several planning periods.
    deadline = time.monotonic() + 12
    i = 0
    while time.monotonic() < deadline:
        adapter = ADAPTERS[0] if i % 2 == 0 else ADAPTERS[i % len(ADAPTERS)]
        response = httpx.post(f"{fleet.base_url}/v1/completions",
                              json={"model": adapter, "prompt": "plan me", "max_tokens": 2}, timeout=60)
        assert response.status_code == 200
        i += 1
    time.sleep(6)  # > placement period (2 s) + report period: plan made, replicas reconciled
    placement = _get(fleet, "/fleet/placement")
    assert placement["enabled"] and placement["plans"] >= 1
    planned = {rid: set(p["gpu"]) | set(p["cpu"]) for rid, p in placement["replicas"].items()}
    assert ADAPTERS[0] in set().union(*planned.values()), planned
    replicas = {r["replica_id"]: r for r in _get(fleet, "/fleet/replicas")["replicas"]}
    for rid, adapters in planned.items():
        if rid not in replicas:
            continue
        held = set(replicas[rid]["gpu_resident"]) | set(replicas[rid]["cpu_resident"])
        assert adapters <= held, f"replica {rid} should hold {adapters - held}"
        assert set(replicas[rid]["desired"]) == adapters
