"""Bounded waits for a service to come back after a change.

Each wait polls a read-only probe until it passes or the deadline passes,
then raises VerificationError naming what was expected and what was seen.
Tests set POLL_INTERVAL to 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from ..errors import VerificationError
from ..secrets import Secret
from . import facts
from .execute import host_of

# Seconds between two probes.
POLL_INTERVAL = 1.0
# Seconds a unit or endpoint gets to come back after a restart.
DEFAULT_TIMEOUT = 60

T = TypeVar("T")


def poll(
    probe: Callable[[], T],
    accept: Callable[[T], bool],
    *,
    timeout: float,
    interval: float | None = None,
) -> tuple[bool, T]:
    """Call PROBE until ACCEPT(value) holds or TIMEOUT seconds pass; return (ok, last value)."""
    pause = POLL_INTERVAL if interval is None else interval
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return True, value
        if time.monotonic() >= deadline:
            return False, value
        time.sleep(pause)


def wait_unit_active(conn: Any, unit: str, *, timeout: float = DEFAULT_TIMEOUT) -> facts.UnitState:
    """Wait until UNIT is active and not restarting."""
    ok, state = poll(
        lambda: facts.unit_state(conn, unit),
        lambda state: state.active == "active" and state.sub == "running",
        timeout=timeout,
    )
    if not ok:
        raise VerificationError(
            f"{unit} on {host_of(conn)} is {state.active}/{state.sub} {timeout:.0f} s after "
            f"the restart (expected active/running); see: journalctl -u {unit} -n 50"
        )
    return state


def wait_http(
    conn: Any,
    url: str,
    expected: Collection[int],
    *,
    credentials: tuple[str, Secret] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **options: Any,
) -> int:
    """Wait until a GET of URL from the server returns one of the EXPECTED status codes."""
    ok, status = poll(
        lambda: facts.http_status(conn, url, credentials=credentials, **options),
        lambda status: status in expected,
        timeout=timeout,
    )
    if not ok:
        seen = "no response" if status == 0 else f"HTTP {status}"
        wanted = " or ".join(str(code) for code in sorted(expected))
        raise VerificationError(
            f"GET {url} on {host_of(conn)} returned {seen} after {timeout:.0f} s; expected {wanted}"
        )
    return status
