"""Stage-by-stage progress output for long tasks such as deploy.

Each stage prints one line when it starts and one when it ends, with the
time elapsed since the task began. While a stage waits, a terminal gets a
line rewritten in place; other outputs (CI logs, pipes) get a plain line at
most every REPORT_INTERVAL seconds.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

REPORT_INTERVAL = 15.0


class Progress:
    def __init__(self, stream: TextIO | None = None, clock=time.monotonic) -> None:
        self.stream = stream or sys.stdout
        self.clock = clock
        self.started = clock()
        self.stage_name = ""
        self.stage_started = self.started
        self._last_report = self.started
        self._dirty = False
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())

    def _stamp(self) -> str:
        return f"[{self.clock() - self.started:6.1f}s]"

    def _clear(self) -> None:
        if self._dirty:
            self.stream.write("\r\x1b[K")
            self._dirty = False

    def line(self, text: str) -> None:
        self._clear()
        self.stream.write(f"{self._stamp()} {text}\n")
        self.stream.flush()

    def stage(self, name: str) -> None:
        self.stage_name = name
        self.stage_started = self.clock()
        self._last_report = self.stage_started
        self.line(name)

    def waiting(self, detail: str) -> None:
        """Report that the current stage is still waiting, without flooding the output."""
        now = self.clock()
        waited = now - self.stage_started
        if self.terminal:
            self.stream.write(
                f"\r\x1b[K{self._stamp()} {self.stage_name}: {detail} ({waited:.0f}s)"
            )
            self.stream.flush()
            self._dirty = True
        elif now - self._last_report >= REPORT_INTERVAL:
            self._last_report = now
            self.line(f"{self.stage_name}: still waiting, {detail} ({waited:.0f}s)")

    def done(self, text: str) -> None:
        self.line(f"{self.stage_name}: {text} ({self.clock() - self.stage_started:.1f}s)")
