"""The demo build in stages, as a child process of `lorafleet serve --demo`.

Why stages: a cold demo build is ~1 minute of pretraining the base and ~3 more of
training ten adapters. A fleet needs only the base to answer, so `lorafleet serve
--demo` starts the fleet as soon as the base is ready and publishes each adapter
through the registry as it finishes: the first answer comes after the base, not
after the whole build. A child process, so that stopping the server stops training
at once (its process group is killed) and the server's terminal stays its own.

    python -m factory.demo_build OUT

speaks JSON lines on its stdout (everything else it prints goes to stderr):

    -> {"event": "base", "built": true, "seconds": 52.1}       OUT/base is ready
    <- {"train": ["poet", ...]}                                 (stdin) train these now
    -> {"event": "adapter", "name": "poet", "folder": "...", "seconds": 31.0, "eval_loss": 0.01}
    -> {"event": "done"}

Adapters are trained into OUT/.staging/<name> (never into the store, OUT/adapters:
the server publishes them). Training waits for the `train` line so that it does not
take the CPUs the fleet's engines need to start. The same seeds and functions as
`build_demo_assets`, so the weights are the same bytes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

STAGING = ".staging"


def main(argv: list[str] | None = None) -> int:
    from factory.demo import DEFAULT_RECIPE, train_demo_adapters
    from factory.demo_assets import BASE_NAME, DEMO_ADAPTERS, build_demo_base, demo_digest

    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0])
    # The protocol owns stdout; every other write (logs, warnings, libraries) goes to stderr.
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(**event) -> None:
        events.write(json.dumps(event) + "\n")

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    started = time.monotonic()
    built = build_demo_base(out, digest=demo_digest(), log=log)
    (out / "adapters").mkdir(parents=True, exist_ok=True)  # the fleet's store: it must exist to start
    emit(event="base", built=built, seconds=round(time.monotonic() - started, 1))
    line = sys.stdin.readline()
    if not line:
        return 0  # the server went away before the fleet was up
    names = set(json.loads(line)["train"])
    todo = tuple(a for a in DEMO_ADAPTERS if a.name in names)
    staging = out / STAGING

    def trained(name: str, seconds: float, metrics: dict) -> None:
        emit(event="adapter", name=name, folder=str(staging / name), seconds=round(seconds, 1),
             eval_loss=metrics.get("eval_loss"))

    if todo:
        train_demo_adapters(out / "base", BASE_NAME, todo, staging, out / "datasets", DEFAULT_RECIPE,
                            log=log, on_trained=trained)
    emit(event="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
