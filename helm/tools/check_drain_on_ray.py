"""The chart's preStop drain hook (helm/lorafleet/files/drain-ray-node.sh) on real Ray.

    flock /tmp/lorafleet-heavy.lock python helm/tools/check_drain_on_ray.py

A stream is in flight on a worker node when the hook drains that node: the stream must
finish complete, Ray Serve must start the replica on the other worker node, and the hook
must return only once the old replica's process is gone. Prints RESULT: PASS or FAIL.

Three raylets on this machine (`ray start`: a head and two workers offering one `slot`
each), Serve's proxy on the head only, one streaming replica needing a slot. The hook runs
with the real `ray` CLI (`ray drain-node`); only its node-id lookup is given by a fake
`python` (from this machine, `ray.init` cannot tell three local raylets apart), and its
/proc is a folder holding a link to the replica's real /proc entry (the test machine's
/proc holds every raylet's processes, a pod's only its own). tests/helm runs the same hook
with fakes; this is the check that Ray really lets the stream finish. Ray is started here:
run it under the heavy-work lock, rarely.
"""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
PORT, HTTP_PORT = 26391, 28941  # outside Ray's worker port range (10002-19999)
SCRIPT = (Path(__file__).resolve().parents[1] / "lorafleet" / "files" / "drain-ray-node.sh").read_text()
CHUNKS, CHUNK_S = 24, 0.5


def sh(*args, **kw):
    result = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if result.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def main():
    os.environ["RAY_AUTH_MODE"] = "token"  # ray start (2.60) turns token auth on; joining nodes and drivers need it
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    sh(RAY, "start", "--head", f"--port={PORT}", "--num-cpus=1", "--include-dashboard=false",
       "--node-ip-address=127.0.0.1", env=env)
    try:
        for _ in range(2):
            sh(RAY, "start", f"--address=127.0.0.1:{PORT}", "--num-cpus=1", '--resources={"slot": 1}',
               "--node-ip-address=127.0.0.1", env=env)
        import ray
        from ray import serve
        from starlette.responses import StreamingResponse, JSONResponse

        ray.init(address=f"127.0.0.1:{PORT}", logging_level="ERROR")

        @serve.deployment(ray_actor_options={"resources": {"slot": 1}, "num_cpus": 0}, graceful_shutdown_timeout_s=120)
        class Streamer:
            async def __call__(self, request):
                import asyncio
                if request.url.path.endswith("/where"):
                    return JSONResponse({"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()})

                async def chunks():
                    for i in range(CHUNKS):
                        yield f"chunk {i}\n"
                        await asyncio.sleep(CHUNK_S)
                return StreamingResponse(chunks())

        serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT}, proxy_location="HeadOnly")
        serve.run(Streamer.bind(), route_prefix="/")
        base = f"http://127.0.0.1:{HTTP_PORT}"
        where = httpx.get(f"{base}/where", timeout=30).json()
        print("replica before:", where)

        received, done = [], {}

        def stream():
            with httpx.stream("GET", f"{base}/stream", timeout=300) as r:
                for line in r.iter_lines():
                    if line:
                        received.append((time.monotonic(), line))
            done["at"] = time.monotonic()

        t = threading.Thread(target=stream); t.start()
        while len(received) < 2:
            time.sleep(0.1)
        work = Path(tempfile.mkdtemp())
        (work / "bin").mkdir(); (work / "proc").mkdir()
        (work / "bin" / "python").write_text(f"#!/bin/bash\ncat >/dev/null\necho -n {where['node']}\n")
        (work / "bin" / "python").chmod(0o755)
        os.symlink(f"/proc/{where['pid']}", work / "proc" / str(where["pid"]))
        hook_env = {**env, "PATH": f"{work / 'bin'}:{VENV_BIN}:{os.environ['PATH']}",
                    "RAY_ADDRESS": f"127.0.0.1:{PORT}", "HOSTNAME": "worker-a"}
        started = time.monotonic()
        hook = subprocess.run(["/bin/bash", "-c", SCRIPT, "drain-ray-node", "90", str(work / "proc")],
                              env=hook_env, capture_output=True, text=True, timeout=200)
        returned = time.monotonic()
        old_alive = Path(f"/proc/{where['pid']}").exists()
        t.join(timeout=120)
        after = httpx.get(f"{base}/where", timeout=30).json()
        print("hook rc:", hook.returncode, "stderr:", hook.stderr.strip())
        print(f"hook took {returned - started:.1f}s; stream chunks: {len(received)}/{CHUNKS}; "
              f"stream ended {done.get('at', 0) - started:.1f}s after the hook started; old replica process alive at return: {old_alive}")
        print("replica after:", after)
        ok = (hook.returncode == 0 and len(received) == CHUNKS and "at" in done and done["at"] <= returned
              and not old_alive and after["node"] != where["node"])
        print("RESULT:", "PASS" if ok else "FAIL")
        serve.shutdown(); ray.shutdown()
    finally:
        stop_own_cluster()


def stop_own_cluster():
    """SIGKILL only this script's Ray processes (those naming its GCS port), never `ray
    stop`, which would stop every Ray cluster on the machine."""
    mine = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f":{PORT}" in cmd or f"_port={PORT}" in cmd:
                mine.append(int(proc.name))
    for pid in mine:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    print("stopped own ray processes:", len(mine))


if __name__ == "__main__":
    main()
