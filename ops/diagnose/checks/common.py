"""Fix commands and small helpers shared by the checks."""

from __future__ import annotations

from typing import Any

from ... import layout

# Toolkit commands that a fix may name; they run in the project directory.
SET_S3_CREDENTIALS = "inv set-s3-credentials"
SET_LOGIN = "inv rotate-password --user USER"
UPGRADE_CADDY = "inv upgrade-caddy"


def restart(service: str) -> str:
    return f"inv restart --service {service}"


def logs(source: str) -> str:
    """Return the toolkit command that shows a log: zot, zot-log, caddy, access, auto-update."""
    return f"inv logs --source {source}"


# The bootstrap script can run again without harm (see templates/bootstrap.sh.j2).
RERUN_BOOTSTRAP = f"bash {layout.BOOTSTRAP_SCRIPT}"


def rewrite(path: str) -> str:
    """Return the fix that puts the toolkit's own version of server file PATH back.

    `inv deploy` renders the server files from the settings, replaces each
    one that differs (validated, with a rollback) and restarts what uses it.
    """
    return f"inv deploy (it writes the rendered {path} back and restarts what uses it)"


def reload_unit(unit: str) -> str:
    """Return what makes systemd load a rewritten unit file and restart the unit."""
    return (
        f"on the server: systemctl daemon-reload && systemctl enable {unit} "
        f"&& systemctl restart {unit}"
    )


def unit(facts: dict[str, Any], name: str) -> dict[str, str]:
    """Return the `systemctl show` properties the probe reported for unit NAME ({} if none)."""
    units = facts.get("units") or {}
    return units.get(name) or {}


def unit_state(properties: dict[str, str]) -> str:
    """Describe a unit's state the way `systemctl status` does: `failed (Result: exit-code)`."""
    if not properties:
        return "unknown"

    if properties.get("LoadState") == "not-found":
        return "not installed"

    state = f"{properties.get('ActiveState', '?')} ({properties.get('SubState', '?')})"
    result = properties.get("Result")
    if result and result != "success":
        state += f", result {result}"
        status = properties.get("ExecMainStatus")
        if status and status != "0":
            state += f", exit status {status}"
    return state


def restarts(properties: dict[str, str]) -> int:
    value = properties.get("NRestarts", "")
    return int(value) if value.isdigit() else 0


def size(value: float | None) -> str:
    """Format a byte count with a binary unit: 1.5 GiB."""
    if value is None:
        return "?"

    amount = float(value)
    for unit_name in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit_name == "TiB":
            return f"{amount:.0f} {unit_name}" if unit_name == "B" else f"{amount:.1f} {unit_name}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def duration(seconds: float) -> str:
    """Format a time span coarsely: 45 s, 12 min, 5 h, 3 days."""
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"

    if seconds < 5400:
        return f"{seconds / 60:.0f} min"

    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def probe_error(section: Any) -> str | None:
    """Return the error a probe section reported, if it could not collect its facts."""
    if not isinstance(section, dict):
        return "not reported"
    return section.get("probe_error")
