"""The terminal of `lorafleet serve`: progress lines, the banner, one status line.

What a person needs on the terminal, and nothing else (the logs go to the log folder,
deployments/cli/logs.py): what is happening now with the time since start, the
banner, then a status line redrawn in place. On a terminal the status line is
rewritten with a carriage return and an erase-line sequence; when stdout is not a
terminal (tests, CI, `| tee`) there is nothing to redraw, so the status is printed
as a plain line only when it changed and at most once per `plain_status_period_s`
(transient ones not at all),
never with escape sequences. Several threads print (the start-up wait, the demo
build, the status ticker): every write holds one lock.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time

ERASE_LINE = "\r\x1b[2K"


class Console:
    def __init__(self, stream=None, *, started: float | None = None, plain_status_period_s: float = 60.0):
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic() if started is None else started
        self.plain_status_period_s = plain_status_period_s
        self._lock = threading.Lock()
        self._status = ""  # drawn at the bottom right now (TTY only)
        self._last_plain: tuple[float, str] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _write(self, text: str) -> None:
        """Print `text` above the status line (and redraw the status line under it)."""
        if self.tty and self._status:
            self.stream.write(ERASE_LINE)
        self.stream.write(text if text.endswith("\n") else text + "\n")
        if self.tty and self._status:
            self.stream.write(self._status)
        self.stream.flush()

    def step(self, message: str) -> None:
        """A progress line: `[  12s] starting 2 engine replicas...`."""
        with self._lock:
            self._write(f"[{self.elapsed():5.0f}s] {message}")

    def say(self, text: str = "") -> None:
        with self._lock:
            self._write(text)

    def status(self, line: str, *, key: str | None = None, transient: bool = False) -> None:
        """Show `line` as the status. `key` is what counts as a change for the plain
        (non-terminal) output, e.g. the counters but not the rates; a `transient` status
        (a ticking "starting... 12 s") is drawn on a terminal only."""
        with self._lock:
            if transient and not self.tty:
                return
            if self.tty:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                self._status = line[:width]
                self.stream.write(ERASE_LINE + self._status)
                self.stream.flush()
                return
            now, key = time.monotonic(), line if key is None else key
            if self._last_plain is not None:
                at, last_key = self._last_plain
                if key == last_key or now - at < self.plain_status_period_s:
                    return
            self._last_plain = (now, key)
            self._write(f"[{self.elapsed():5.0f}s] status: {line}")

    def clear_status(self) -> None:
        with self._lock:
            if self.tty and self._status:
                self.stream.write(ERASE_LINE)
                self.stream.flush()
            self._status = ""
