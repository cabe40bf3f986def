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

`DemoRun` is what `serve` calls at each stage; `DemoBuild` the child process and its
events; `publish` the registry call.
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deployments.cli.console import Console
    from deployments.cli.fleet import Fleet
    from deployments.config import LorafleetConfig


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


class DemoRun:
    """`--demo`: examples for the adapters there are, and the build of those missing."""

    def __init__(self, config: LorafleetConfig, console: Console):
        from factory.demo_assets import DEMO_ADAPTERS, is_complete

        self.config = config
        self.console = console
        self.folder = demo_folder(config)
        self.specs = {a.name: a for a in DEMO_ADAPTERS}
        self.complete = is_complete(self.folder)
        self.build = None
        self.published = 0
        self.to_publish = 0
        self.finished = False

    def start_build(self) -> None:
        if self.complete:
            return
        self.build = DemoBuild(self.folder)
        self.build.start()

    def wait_base(self, stop: threading.Event) -> str | None:
        """Until the base model is ready; None when it is, else why not."""
        if self.build is None:
            return None
        self.console.step(f"building the demo base model in {self.folder} (pretraining, about a minute)...")
        started = time.monotonic()
        while not stop.is_set():
            event = self.build.next_event(0.5)
            if event is None:
                self.console.status(f"pretraining the demo base model · {time.monotonic() - started:.0f} s", transient=True)
                continue
            if event["event"] == "base":
                what = "built" if event["built"] else "found (from an earlier run)"
                self.console.step(f"demo base model {what} in {event['seconds']:.0f} s")
                return None
            if event["event"] == "exit":
                return f"the demo build failed (exit {event['code']}):\n{self.build.log_tail()}"
        return "interrupted"

    def after_ready(self, fleet: Fleet) -> None:
        """Examples for what is there; start training what is missing."""
        there = published_names(fleet.base_url) & set(self.specs)
        if self.build is None:
            self._examples(fleet, [self.specs[n] for n in self.specs if n in there], header=True)
            return
        missing = [n for n in self.specs if n not in there]
        self.to_publish = len(missing)
        if there:
            self._examples(fleet, [self.specs[n] for n in self.specs if n in there], header=True)
        self.console.say(f"  training the {len(missing)} demo adapters now (two at a time, 20-50 s each); each one is "
                         f"published to this fleet through the registry as it finishes, and its example printed:\n")
        self.build.train(missing)

    def poll(self, fleet: Fleet) -> None:
        """Publish what the build finished since the last call."""
        from factory.demo_assets import mark_complete

        if self.build is None:
            return
        while (event := self.build.next_event(0)) is not None:
            if event["event"] == "adapter":
                name, folder = event["name"], Path(event["folder"])
                started = time.monotonic()
                publish(fleet.base_url, name, folder)
                remove_staged(folder)
                self.published += 1
                self.console.step(f"published {name} ({self.published}/{self.to_publish}): trained in "
                                  f"{event['seconds']:.0f} s, published in {time.monotonic() - started:.1f} s")
                self._examples(fleet, [self.specs[name]], header=False)
            elif event["event"] == "done":
                mark_complete(self.folder)
                self.finished = True
                self.console.step(f"every demo adapter is served; `lorafleet demo-examples --url {fleet.base_url}` "
                                  "shows them again")
            elif event["event"] == "exit":
                if event["code"] != 0:
                    self.console.step(f"the demo build stopped (exit {event['code']}); the fleet keeps serving what "
                                      f"is published:\n{self.build.log_tail()}")
                self.build = None
                return

    def progress(self) -> str:
        if self.build is None or not self.to_publish:
            return ""
        return f"demo adapters {self.published}/{self.to_publish} published"

    def _examples(self, fleet: Fleet, specs, header: bool) -> None:
        from factory.demo_examples import showcase

        if not specs:
            return
        try:
            lines = showcase(fleet.base_url, tuple(specs), self.config.model.served_name)
        except Exception as err:  # noqa: BLE001 - an example failing must not stop the server
            self.console.step(f"could not run the demo example(s): {err}")
            return
        if header:
            self.console.say(f"  demo skills (greedy; `lorafleet demo-examples --url {fleet.base_url}` shows them again):")
        self.console.say("\n".join(lines) + ("\n" if header else ""))

    def stop(self) -> None:
        if self.build is not None and self.build.process is not None and self.build.process.poll() is None:
            self.build.stop()
            if not self.finished:
                self.console.step("stopped the demo build (a later `make demo` trains what is missing)")
