"""status and restart of the registry's services on each server."""

from __future__ import annotations

import json
from typing import Any

from .. import layout
from ..config import Settings
from ..errors import ConfigError, VerificationError
from ..remote import commands, facts
from ..remote.change import apply_change, restart_step
from ..remote.execute import run
from ..remote.hosts import OK, HostOutput, Outcome
from ..remote.lock import read_owner
from . import common
from .caddy_upgrade import https_check

TASK_RESTART = "restart"
SERVICES = ("zot", "caddy", "both")


def _unit_line(state: facts.UnitState) -> str:
    restarts = "-" if state.restarts is None else str(state.restarts)
    return (
        f"{state.unit}: {state.active}/{state.sub}, {state.enabled}, since "
        f"{state.active_since or '-'}, restarts {restarts}"
    )


def status(conn: Any, out: HostOutput, *, settings: Settings) -> Outcome:
    """Print the state of zot, Caddy, auto-update, the lock and the last change."""
    problems = []
    zot = facts.unit_state(conn, layout.ZOT_UNIT)
    out(_unit_line(zot))
    container = facts.container_state(conn, layout.ZOT_CONTAINER)
    if container.exists:
        label = container.labels.get(layout.AUTOUPDATE_LABEL, "(unset)")
        out(
            f"  container {container.name}: {'running' if container.running else 'stopped'}, "
            f"image {container.image}, {layout.AUTOUPDATE_LABEL}={label}"
        )
    zot_http = facts.http_status(conn, common.ZOT_V2)
    out(
        f"  {common.ZOT_V2}: {'HTTP ' + str(zot_http) if zot_http else 'no response'} (expected 401)"
    )
    if not zot.is_active or zot_http != 401:
        problems.append("zot is not serving")

    caddy = facts.unit_state(conn, layout.CADDY_UNIT)
    out(_unit_line(caddy))
    out(f"  version: {facts.program_version(conn, layout.CADDY_BINARY) or 'not installed'}")
    https = facts.http_status(
        conn,
        f"https://{settings.domain}/v2/",
        insecure=True,
        resolve=f"{settings.domain}:443:127.0.0.1",
    )
    out(
        f"  https://{settings.domain}/v2/ on this server: "
        f"{'HTTP ' + str(https) if https else 'no response'} (expected 401)"
    )
    if not caddy.is_active or https not in (200, 401):
        problems.append("Caddy is not serving HTTPS")

    timer = facts.unit_state(conn, layout.AUTOUPDATE_TIMER, facts.TIMER_PROPERTIES)
    out(
        f"{layout.AUTOUPDATE_TIMER}: {timer.active}, next {timer.properties.get('NextElapseUSecRealtime') or '-'}"
    )
    holder = read_owner(conn)
    out(f"change lock: {'held by ' + holder.describe() if holder else 'free'}")
    last = run(conn, commands.tail_file(layout.AUDIT_LOG, lines=1), check=False).stdout.strip()
    if last:
        try:
            entry = json.loads(last)
            out(
                f"last change: {entry.get('time')} {entry.get('task')} by {entry.get('operator')}: {entry.get('result')}"
            )
        except ValueError:
            out(f"last change: {last[:200]}")
    if problems:
        raise VerificationError("; ".join(problems))
    return Outcome(OK, "zot and Caddy serve")


def restart(
    conn: Any,
    out: HostOutput,
    *,
    settings: Settings,
    service: str,
    dry_run: bool = False,
    break_lock: bool = False,
) -> Outcome:
    """Restart zot, Caddy or both, then wait until they respond again."""
    if service not in SERVICES:
        raise ConfigError(f"--service {service!r} is not valid; use zot, caddy or both")
    steps, checks = [], []
    if service in ("zot", "both"):
        steps.append(restart_step(layout.ZOT_UNIT, always_changes=True))
        checks += common.zot_checks()
    if service in ("caddy", "both"):
        steps.append(restart_step(layout.CADDY_UNIT, always_changes=True))
        checks.append(https_check(settings.domain))
    with common.maybe_locked(conn, TASK_RESTART, dry_run=dry_run, break_lock=break_lock, out=out):
        result = apply_change(
            conn, task=TASK_RESTART, steps=steps, checks=checks, dry_run=dry_run, out=out
        )
    return common.outcome(result)
