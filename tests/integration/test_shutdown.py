"""`lorafleet serve` shuts down cleanly on SIGTERM: exit 0, no orphaned Ray or vLLM processes."""

import signal
import time

import psutil
import pytest


@pytest.mark.fleet_shutdown
def test_sigterm_stops_everything(fleet):
    server = psutil.Process(fleet.process.pid)
    descendants = server.children(recursive=True)
    assert any("raylet" in p.name() for p in descendants)
    fleet.process.send_signal(signal.SIGTERM)
    assert fleet.process.wait(timeout=120) == 0, fleet.log_tail()
    deadline = time.monotonic() + 30
    alive = descendants
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(1)
    assert not alive, f"orphaned processes after shutdown: {[(p.pid, p.name()) for p in alive]}"
