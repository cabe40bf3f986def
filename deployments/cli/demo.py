"""`lorafleet serve --demo`: serve the demo while it is still being built.

The demo's assets folder is the parent of the config's base model (`model.source` =
ASSETS/base, `adapters.uri` = ASSETS/adapters, as in configs/default.yaml). When the
folder holds a finished build, the server starts at once. Otherwise a child process
(`factory.demo_build`) pretrains the base while Ray starts; the fleet starts on the
base alone; then the adapters train, and each is published through the registry API
(`POST /v1/adapters`, the same call `lorafleet adapters push` makes) as it finishes,
with its example printed: the first answer comes about a minute after `make demo`
instead of after the whole ~4-minute build. Once every adapter is published, the
folder is marked complete and later runs start at once. Stopping the server kills the
build (its process group); a later run keeps the pretrained base and the adapters
already published, and trains the rest.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class DemoError(Exception):
    pass


def demo_folder(config) -> Path:
    """The assets folder the config serves from; DemoError when the config is not laid out as the demo's."""
    base = Path(config.model.source)
    folder = base.parent
    if base.name != "base" or Path(config.adapters.uri) != folder / "adapters":
        raise DemoError(f"--demo needs model.source = ASSETS/base and adapters.uri = ASSETS/adapters "
                        f"(configs/default.yaml); got {config.model.source} and {config.adapters.uri}")
    return folder


class DemoBuild:
    """The child process building the demo, the events it reports, and its log (held
    in memory until the log folder is known: the build starts before Ray does)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.events: queue.Queue[dict] = queue.Queue()
        self.process: subprocess.Popen | None = None
        self._log_lock = threading.Lock()
        self._held: list[str] = []
        self._log = None
        self.log_path: Path | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "factory.demo_build", str(self.folder)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True,  # its own process group: stop() ends its training workers too
        )
        threading.Thread(target=self._read_events, name="demo-build-events", daemon=True).start()
        threading.Thread(target=self._read_log, name="demo-build-log", daemon=True).start()

    def attach_log(self, path: Path) -> None:
        with self._log_lock:
            self.log_path = path
            self._log = path.open("a", buffering=1)
            self._log.writelines(self._held)
            self._held = []

    def _read_log(self) -> None:
        for line in self.process.stderr:
            with self._log_lock:
                if self._log is None:
                    self._held.append(line)
                    del self._held[:-1000]
                else:
                    self._log.write(line)

    def _read_events(self) -> None:
        for line in self.process.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                continue
        self.events.put({"event": "exit", "code": self.process.wait()})

    def next_event(self, timeout: float) -> dict | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def train(self, names: list[str]) -> None:
        """Let the build train `names` (it waits for this: the engines start first)."""
        self.process.stdin.write(json.dumps({"train": names}) + "\n")
        self.process.stdin.flush()

    def log_tail(self, lines: int = 15) -> str:
        with self._log_lock:
            if self.log_path is None:
                return "".join(self._held[-lines:])
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the build at once (training is resumable; nothing it half-wrote is used)."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)


def publish(base_url: str, name: str, folder: Path, api_key: str | None = None, attempts: int = 10) -> dict:
    """POST the adapter folder to the fleet's registry (as `lorafleet adapters push`)."""
    import httpx

    from adapters.archive import pack_folder

    archive = pack_folder(folder)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    for _ in range(attempts):
        response = httpx.post(f"{base_url}/v1/adapters", headers=headers, timeout=120,
                              data={"name": name}, files={"file": (f"{name}.tar.gz", archive, "application/gzip")})
        if response.status_code != 503:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
    if response.status_code != 201:
        raise DemoError(f"publishing {name} failed: {response.status_code} {response.text[:300]}")
    return response.json()


def published_names(base_url: str, api_key: str | None = None) -> set[str]:
    """Servable adapters in the fleet's registry."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{base_url}/v1/adapters", headers=headers, timeout=30)
    response.raise_for_status()
    return {a["id"] for a in response.json()["data"] if a["servable"]}


def remove_staged(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
