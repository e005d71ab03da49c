"""auto-update: the podman auto-update timer that pulls a new zot image and restarts zot.

podman auto-update restarts a unit whose container carries the label
io.containers.autoupdate=registry when the registry has a newer image for
the same fully qualified reference, and rolls back when the new container
does not report ready.
"""

from __future__ import annotations

import json
from typing import Any

from .. import layout
from ..errors import OpsError, VerificationError
from ..remote import audit, commands, facts
from ..remote.execute import host_of, run
from ..remote.hosts import CHANGED, OK, UNCHANGED, HostOutput, Outcome
from ..remote.lock import change_lock
from . import common

TASK = "auto-update"
SERVICE_PROPERTIES = (
    "ActiveState",
    "Result",
    "ExecMainStatus",
    "ExecMainStartTimestamp",
    "ExecMainExitTimestamp",
)
# podman auto-update runs a pull per image; bound one run.
RUN_TIMEOUT = 900


def parse_report(text: str) -> list[dict[str, str]]:
    """Parse `podman auto-update --format json` output: one object per unit."""
    text = text.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        raise OpsError(f"podman auto-update printed no JSON: {text[:200]!r}") from None
    return (
        [{str(k): str(v) for k, v in item.items()} for item in data]
        if isinstance(data, list)
        else []
    )


def label_problem(container: facts.ContainerState) -> str | None:
    """Return why auto-update cannot update the zot container, or None."""
    if not container.exists:
        return f"container {container.name} does not exist; start {layout.ZOT_UNIT}"
    label = container.labels.get(layout.AUTOUPDATE_LABEL)
    if label != "registry":
        return (
            f"container {container.name} has {layout.AUTOUPDATE_LABEL}={label or '(unset)'}, "
            "expected registry; redeploy the zot unit"
        )
    return None


def last_run_lines(timer: dict[str, str], service: dict[str, str]) -> list[str]:
    """Describe the last run of the update service from the `systemctl show` properties.

    The timer's LastTriggerUSec changes only when the timer starts the
    service, so a run started with `systemctl start` leaves it empty. The
    service's ExecMain* timestamps record every start, but only since boot,
    because systemd does not keep them across a reboot (systemd 252).
    """
    triggered = timer.get("LastTriggerUSec", "")
    started = service.get("ExecMainStartTimestamp", "")
    ended = service.get("ExecMainExitTimestamp", "")
    if not started:
        if not triggered:
            return ["last run: never"]
        # NOTE: podman's timer has Persistent=true, and systemd 252 then takes
        # LastTriggerUSec from the mtime of a stamp file that it creates when
        # the timer first starts. So after a reboot or a timer restart, this
        # is that start time if the timer never fired.
        return [
            f"last run: none since boot (timer's last trigger: {triggered})",
            "last result: unknown; see inv auto-update --journal",
        ]

    how = "" if triggered else " (not by the timer, which has not fired yet)"
    lines = [f"last run: started {started}{how}"]
    if ended:
        lines.append(
            f"last result: {service.get('Result') or 'unknown'} (exit status "
            f"{service.get('ExecMainStatus') or '-'}, ended {ended})"
        )
    else:
        lines.append(f"last result: none yet, the run is {service.get('ActiveState') or 'unknown'}")
    return lines


def status(conn: Any, out: HostOutput) -> Outcome:
    """Print the timer, the last run and whether the zot container is set up for updates."""
    timer = facts.unit_state(conn, layout.AUTOUPDATE_TIMER, facts.TIMER_PROPERTIES)
    service = facts.unit_state(conn, layout.AUTOUPDATE_SERVICE, SERVICE_PROPERTIES)
    container = facts.container_state(conn, layout.ZOT_CONTAINER)
    out(f"timer {layout.AUTOUPDATE_TIMER}: {timer.active}, {timer.enabled}")
    out(f"  next run: {timer.properties.get('NextElapseUSecRealtime') or 'not scheduled'}")
    for line in last_run_lines(timer.properties, service.properties):
        out(line)
    out(f"zot image: {container.image or '-'}")
    problems = []
    problem = label_problem(container)
    if problem:
        problems.append(problem)
    if timer.active != "active":
        problems.append(
            f"{layout.AUTOUPDATE_TIMER} is {timer.active}; enable it: systemctl enable --now {layout.AUTOUPDATE_TIMER}"
        )
    if problems:
        raise VerificationError("; ".join(problems))
    out(f"{layout.AUTOUPDATE_LABEL}=registry is set on {layout.ZOT_CONTAINER}")
    return Outcome(OK, f"timer {timer.active}")


def _print_report(report: list[dict[str, str]], out: HostOutput) -> None:
    if not report:
        out("no containers with an auto-update label")
    for item in report:
        out(
            f"{item.get('Unit', '?')}: {item.get('Image', '?')} "
            f"policy {item.get('Policy', '?')}, updated: {item.get('Updated', '?')}"
        )


def dry_run(conn: Any, out: HostOutput) -> Outcome:
    """Ask podman which units have a newer image waiting (`pending`), changing nothing."""
    report = parse_report(run(conn, commands.autoupdate(dry_run=True), timeout=RUN_TIMEOUT).stdout)
    _print_report(report, out)
    pending = [item for item in report if item.get("Updated") == "pending"]
    return Outcome(OK, f"{len(pending)} pending")


def run_now(conn: Any, out: HostOutput, *, break_lock: bool = False) -> Outcome:
    """Run podman auto-update now; when zot got a new image it must respond again."""
    problem = label_problem(facts.container_state(conn, layout.ZOT_CONTAINER))
    if problem:
        raise VerificationError(problem)
    with change_lock(conn, TASK, break_lock=break_lock, out=out):
        result = run(conn, commands.autoupdate(dry_run=False), timeout=RUN_TIMEOUT, check=False)
        report = parse_report(result.stdout) if result.stdout.strip().startswith("[") else []
        _print_report(report, out)
        updated = [item.get("Unit", "?") for item in report if item.get("Updated") == "true"]
        failed = result.exited != 0 or any(item.get("Updated") == "failed" for item in report)
        outcome = "updated " + ", ".join(updated) if updated else "no newer image"
        if failed:
            outcome = f"failed (podman rolls back a unit that does not start): {result.stderr.strip()[-300:]}"
        check_error = None
        if updated or failed:
            try:
                for step in common.zot_checks():
                    out(f"check: {step.description}")
                    step.run(conn)
            except OpsError as error:
                check_error = error
                outcome += "; zot does not respond"
        audit.record(conn, TASK, outcome, [f"podman auto-update: {outcome}"])
    if check_error is not None:
        raise VerificationError(
            f"after podman auto-update on {host_of(conn)}: {check_error}. "
            f"See: journalctl -u {layout.ZOT_UNIT} -n 50"
        )
    if failed:
        raise OpsError(
            f"podman auto-update failed on {host_of(conn)}; zot responds again after the "
            f"rollback. See: journalctl -u {layout.AUTOUPDATE_SERVICE} -n 50"
        )
    return Outcome(CHANGED if updated else UNCHANGED, outcome)


def journal(conn: Any, out: HostOutput, *, lines: int) -> Outcome:
    text = run(conn, commands.journal(layout.AUTOUPDATE_SERVICE, lines=lines)).stdout
    for line in text.splitlines():
        out(line)
    return Outcome(OK)
