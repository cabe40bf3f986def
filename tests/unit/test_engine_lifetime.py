"""An EngineCore-named child process exits when its parent is SIGKILLed (the orphan
fix), and other processes are left alone. Real processes, no vLLM: the parent-death
signal is the kernel's, so a stand-in parent proves it."""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

from deployments.engine import lifetime as engine_lifetime


# A parent that spawns a child named like vLLM's engine process; the child arms the
# signal as the vLLM plugin would, reports its pid, and then just sleeps.
PARENT = textwrap.dedent(
    """
    import multiprocessing, sys, time

    def child(hang):
        import signal
        from deployments.engine import lifetime
        lifetime.ORPHAN_GRACE_S = 1.0
        lifetime.arm_engine_core()
        if hang:  # stands in for a vLLM shutdown that never finishes
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("spawn")
        p = ctx.Process(target=child, name=sys.argv[1], args=(sys.argv[2] == "hang",))
        p.start()
        print(p.pid, flush=True)
        time.sleep(600)
    """
)


def _spawn_family(tmp_path, child_name, mode="exit"):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, str(script), child_name, mode], stdout=subprocess.PIPE, text=True, env=env)
    child = psutil.Process(int(parent.stdout.readline()))
    time.sleep(1.5)  # let the child import and arm (it reports its pid at start)
    return parent, child


def _gone(process, timeout_s):
    try:
        process.wait(timeout=timeout_s)
        return True
    except psutil.TimeoutExpired:
        return False


def test_engine_core_child_exits_when_its_parent_is_killed(tmp_path):
    parent, child = _spawn_family(tmp_path, "EngineCore")
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _gone(child, 15), "the EngineCore stand-in outlived its killed parent"


def test_an_engine_core_whose_shutdown_hangs_still_exits_after_the_grace(tmp_path):
    parent, child = _spawn_family(tmp_path, "EngineCore", mode="hang")
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _gone(child, 15), "an EngineCore ignoring SIGTERM outlived its killed parent"


def test_other_children_are_not_armed(tmp_path):
    parent, child = _spawn_family(tmp_path, "SomeWorker")
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert not _gone(child, 2)
    finally:
        child.kill()


def test_only_an_engine_core_process_counts_as_one():
    assert not engine_lifetime.is_engine_core_process()  # the test runner is no spawned EngineCore
    assert multiprocessing.current_process().name == "MainProcess"
