"""Tie a vLLM EngineCore process's life to the engine replica that started it.

Why: vLLM starts each engine's `VLLM::EngineCore` as a child process and stops it
from the parent's shutdown path. When the Ray actor running the replica is killed
hard (SIGKILL, OOM killer, a crashed worker), that path never runs and vLLM 0.32 has
no parent-death watchdog for the EngineCore: it lives on as an orphan holding the
model and its KV cache (~630 MB per replica of the demo model, far more for a real
one), and every replica Ray Serve restarts leaks another. Linux can deliver a signal
to a process when its parent dies (`prctl(PR_SET_PDEATHSIG)`); the EngineCore asks
for SIGTERM, which vLLM's own handler turns into a clean engine shutdown.

The clean shutdown can itself hang (seen in the test suite: an EngineCore whose replica
was killed sat in vLLM's shutdown for half an hour, its worker still holding 1.7 GB), so
a watchdog thread backs the signal up: once the process is orphaned it gives vLLM's
shutdown `ORPHAN_GRACE_S`, then kills the engine's own child processes and exits.

Called from lorafleet's vLLM general plugin (`deployments.engine.vllm_plugin.register`),
which vLLM runs in every process it starts, including the EngineCore.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ORPHAN_GRACE_S = 20.0  # vLLM's own shutdown gets this long once the replica is gone
ORPHAN_POLL_S = 1.0


def is_engine_core_process() -> bool:
    """vLLM names the process it starts for an engine "EngineCore" (or "EngineCore_DP<n>")."""
    return multiprocessing.parent_process() is not None and multiprocessing.current_process().name.startswith("EngineCore")


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies; return whether
    it was armed. If the parent is already gone (died before this ran), signal now."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # orphaned already: re-parented
        os.kill(os.getpid(), sig)
    return True


def arm_engine_core() -> None:
    """In a vLLM EngineCore process, arm the parent-death signal; elsewhere do nothing
    (a Ray worker must not die with the thread that forked it)."""
    if is_engine_core_process() and die_with_parent():
        parent = multiprocessing.parent_process()
        threading.Thread(target=exit_when_orphaned, args=(parent.pid,), name="lorafleet-orphan-watchdog",
                         daemon=True).start()
        logger.debug("lorafleet: this EngineCore exits when its engine replica dies")


def exit_when_orphaned(parent_pid: int, *, getppid=os.getppid, sleep=time.sleep) -> None:
    """Wait until this process's parent is gone; after `ORPHAN_GRACE_S` for vLLM's own
    shutdown (started by the parent-death signal), kill this process's children (the
    engine's workers) and exit."""
    while getppid() == parent_pid:
        sleep(ORPHAN_POLL_S)
    sleep(ORPHAN_GRACE_S)
    logger.warning("lorafleet: the engine replica is gone and vLLM's shutdown did not finish in %.0f s: exiting",
                   ORPHAN_GRACE_S)
    for child in multiprocessing.active_children():
        child.kill()
    _exit_now()


def _exit_now() -> None:
    os._exit(1)
