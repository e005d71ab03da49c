"""The `diagnose` Invoke task; tasks.py adds it to the collection."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from ..config import load_settings
from ..errors import OpsError
from ..remote.connect import select_targets
from . import report, run


@task(
    help={
        "host": "servers to check, comma-separated host[:port] (default: those deploy recorded)",
        "json": "print one JSON document (for monitoring) instead of the listing",
        "warn-fails": "exit 1 on warnings too, not only on failures",
    }
)
def diagnose(c, host=None, json=False, warn_fails=False):
    """Run every troubleshooting check on each server and print the fix for each failure.

    One SSH round trip per server: a probe collects the facts on the server,
    the checks judge them here. Exits 0 when all checks pass, 1 when any fails.
    """
    try:
        settings = load_settings(c)
        targets = select_targets(settings.name, settings.ssh.port, host)
        reports = run.diagnose(settings, targets, run.default_environment(settings))
    except OpsError as error:
        raise Exit(f"error: {error}", code=1) from None
    render = report.render_json if json else report.render_text
    print(render(reports, warn_fails))
    code = run.exit_code(reports, warn_fails)
    if code:
        raise Exit(code=code)
