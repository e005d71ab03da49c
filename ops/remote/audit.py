"""The audit log on a server: one JSON line per change the toolkit made.

Each line records when, who (local user@host), which task, the result and
what changed, described by paths and actions. Values of secret files never
enter it: a change to one is written as the path alone.
"""

from __future__ import annotations

import json
from typing import Any

from .. import layout
from . import commands
from .execute import host_of, run
from .lock import local_operator, utc_now


def entry(task: str, host: str, result: str, changes: list[str]) -> str:
    """Return one audit line (JSON, no newline)."""
    return json.dumps(
        {
            "time": utc_now(),
            "operator": local_operator(),
            "task": task,
            "host": host,
            "result": result,
            "changes": changes,
        },
        sort_keys=True,
    )


def record(conn: Any, task: str, result: str, changes: list[str]) -> None:
    """Append an audit line for TASK to layout.AUDIT_LOG on CONN's server."""
    run(conn, commands.append_line(layout.AUDIT_LOG, entry(task, host_of(conn), result, changes)))
