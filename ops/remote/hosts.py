"""Run one per-server function on several servers at once.

Each server gets its own connection and thread. Output lines are prefixed
with the server's name when more than one server runs, and every server ends
with a result: changed, would change (in a dry run), no change, ok (read-only
tasks) or failed with the error message. One failed server never stops the
others.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TextIO

from ..errors import OpsError
from .connect import Target

CHANGED = "changed"
WOULD_CHANGE = "would change"
UNCHANGED = "no change"
OK = "ok"
FAILED = "failed"
# At most this many servers are worked on at the same time.
MAX_PARALLEL = 10


def change_status(changed: bool, dry_run: bool) -> str:
    """Return CHANGED, or WOULD_CHANGE for a dry run, when something changed; else UNCHANGED."""
    if not changed:
        return UNCHANGED
    return WOULD_CHANGE if dry_run else CHANGED


@dataclass(frozen=True)
class Outcome:
    """The result of a per-server function: a status and a detail.

    The result line reads `<server>: <status>: <message>`, so the message
    names what changed or was found and does not repeat the status word.
    """

    status: str
    message: str = ""


@dataclass(frozen=True)
class HostResult:
    target: Target
    status: str
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAILED


class HostOutput:
    """Callable that writes lines for one server, prefixed with its name if asked."""

    def __init__(self, name: str, prefix: bool, stream: TextIO, lock: threading.Lock) -> None:
        self.name = name
        self.prefix = prefix
        self.stream = stream
        self.lock = lock

    def __call__(self, text: str) -> None:
        lines = text.splitlines() or [""]
        with self.lock:
            for line in lines:
                self.stream.write(f"[{self.name}] {line}\n" if self.prefix else f"{line}\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        """Write TEXT as `<server>: TEXT` when lines carry no prefix, so it still names the server."""
        self(text if self.prefix else f"{self.name}: {text}")


class LineStream:
    """A file-like object that passes whole lines to a HostOutput (for streamed logs)."""

    def __init__(self, out: HostOutput) -> None:
        self.out = out
        self.pending = ""

    def write(self, data: str) -> int:
        self.pending += data
        *complete, self.pending = self.pending.split("\n")
        for line in complete:
            self.out(line)
        return len(data)

    def flush(self) -> None:
        """Do nothing: Invoke flushes after every chunk, which may end mid-line."""

    def finish(self) -> None:
        """Write out a last line that has no newline."""
        if self.pending:
            self.out(self.pending)
            self.pending = ""


def run_on_hosts(
    targets: Sequence[Target],
    connect: Callable[[Target], Any],
    work: Callable[[Any, HostOutput], Outcome],
    *,
    stream: TextIO | None = None,
    max_parallel: int = MAX_PARALLEL,
) -> list[HostResult]:
    """Run WORK(connection, output) on every target; return one result per target in order.

    OpsError from WORK becomes a failed result with its message. Any other
    exception is a bug and is re-raised after all servers finished.
    On Ctrl-C all connections are closed, which ends their remote commands.
    """
    stream = stream or sys.stdout
    lock = threading.Lock()
    prefix = len(targets) > 1
    connections: list[Any] = []

    def one(target: Target) -> HostResult:
        out = HostOutput(target.name, prefix, stream, lock)
        try:
            conn = connect(target)
            with lock:
                connections.append(conn)
            try:
                outcome = work(conn, out)
            finally:
                conn.close()
        except OpsError as error:
            out(f"failed: {error}")
            return HostResult(target, FAILED, str(error))
        return HostResult(target, outcome.status, outcome.message)

    workers = max(1, min(max_parallel, len(targets)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="host") as pool:
        futures: dict[Future[HostResult], Target] = {pool.submit(one, t): t for t in targets}
        pending = set(futures)
        try:
            while pending:
                _done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            with lock:
                for conn in connections:
                    conn.close()
            raise
    return [future.result() for future in futures]


def summary(results: Sequence[HostResult]) -> str:
    """Return one line per server with its result, then the counts."""
    lines = []
    for result in results:
        note = f": {result.message.splitlines()[0]}" if result.message else ""
        lines.append(f"{result.target.name}: {result.status}{note}")
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    lines.append(", ".join(f"{count} {status}" for status, count in counts.items()))
    return "\n".join(lines)


def any_failed(results: Sequence[HostResult]) -> bool:
    return any(result.failed for result in results)
