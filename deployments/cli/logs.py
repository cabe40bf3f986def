"""Where `lorafleet serve`'s logs go: the log folder, not the terminal.

The log folder is the Ray session's log directory on this node
(`/tmp/ray/session_<time>_<pid>/logs`), where Ray already writes everything: Ray's
own processes, Serve's controller, proxy and replica logs (`serve/`), and each worker
process's stdout and stderr (`worker-*.out|err`), which is where vLLM logs, its engine
core processes included. This process's own log (Ray's driver-side messages, Serve's
deploy messages, lorafleet's, Python warnings) is added there as
`lorafleet-serve.log`; until Ray has started and the folder is known it is held in
memory, then written out.

The terminal shows none of it unless `--verbose` (or `--log-level DEBUG|INFO|...`):
then Ray streams the workers' output to this terminal again (`log_to_driver`) and this
process's log is echoed to stderr.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

DRIVER_LOG = "lorafleet-serve.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that install their own terminal handlers on import (ray, ray.serve); they are
# pointed back at the root logger so their records go where this module says.
RAY_LOGGERS = ("ray", "ray.serve")


class DriverLog:
    def __init__(self, terminal_level: int | None = None):
        """`terminal_level`: also echo records at or above it to stderr (None: never)."""
        self.root = logging.getLogger()
        self.root.setLevel(logging.INFO if terminal_level is None else min(terminal_level, logging.INFO))
        self._buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        self._buffer.setFormatter(logging.Formatter(FORMAT))
        self.root.addHandler(self._buffer)
        self._terminal = None
        if terminal_level is not None:
            self._terminal = logging.StreamHandler(sys.stderr)
            self._terminal.setLevel(terminal_level)
            self._terminal.setFormatter(logging.Formatter(FORMAT))
            self.root.addHandler(self._terminal)
        logging.captureWarnings(True)
        self.path: Path | None = None
        self.adopt_ray_loggers()

    def adopt_ray_loggers(self) -> None:
        """Ray and Ray Serve add a stderr handler to their loggers on import (and Serve
        again when it starts): remove them, so their records reach our handlers only."""
        for name in RAY_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
            logger.setLevel(logging.NOTSET)

    def attach(self, folder: Path) -> Path:
        """Write the held records, and every later one, to `folder/lorafleet-serve.log`."""
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / DRIVER_LOG
        handler = logging.FileHandler(self.path)
        handler.setFormatter(logging.Formatter(FORMAT))
        self._buffer.setTarget(handler)
        self._buffer.flush()
        self.root.removeHandler(self._buffer)
        self.root.addHandler(handler)
        return self.path


def parse_level(text: str | None, verbose: bool) -> int | None:
    """The terminal log level: `--log-level` wins, `--verbose` means INFO, else none."""
    if text:
        level = logging.getLevelName(text.upper())
        if not isinstance(level, int):
            raise ValueError(f"unknown log level {text!r} (DEBUG, INFO, WARNING, ERROR)")
        return level
    return logging.INFO if verbose else None
