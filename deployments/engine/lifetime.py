"""Tie a vLLM EngineCore process's life to the engine replica that started it.

Why: vLLM starts each engine's `VLLM::EngineCore` as a child process and stops it
from the parent's shutdown path. When the Ray actor running the replica is killed
hard (SIGKILL, OOM killer, a crashed worker), that path never runs and vLLM 0.32 has
no parent-death watchdog for the EngineCore: it lives on as an orphan holding the
model and its KV cache (~630 MB per replica of the demo model, far more for a real
one), and every replica Ray Serve restarts leaks another. Linux can deliver a signal
to a process when its parent dies (`prctl(PR_SET_PDEATHSIG)`); the EngineCore asks
for SIGTERM, which vLLM's own handler turns into a clean engine shutdown.

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

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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
        logger.debug("lorafleet: this EngineCore exits when its engine replica dies")
