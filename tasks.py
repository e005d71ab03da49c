"""Invoke tasks of zot-hetzner. Run `inv --list` for the tasks, `inv -h TASK` for help.

Tasks parse options, call into the ops package and report; the work happens in ops/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from ops import config
from ops.errors import OpsError


def _fail(error: OpsError) -> Exit:
    return Exit(f"error: {error}", code=1)


@task(
    help={
        "mode": "console: secrets embedded, for pasting into the Hetzner Console; "
        "deploy: no secrets (inv deploy uploads them over SSH). Default: console",
        "output": "where to write the user data (default: cloud-init-custom.yaml)",
        "files": "also write every server file under this folder, for review",
        "secrets-file": "a mode 0600 KEY=VALUE file with secrets (default: environment only)",
    }
)
def render(c, mode="console", output="cloud-init-custom.yaml", files=None, secrets_file=None):
    """Render the cloud-init user data (and optionally each file) for a new server."""
    from ops.rendering import render_deployment

    if mode not in ("console", "deploy"):
        raise Exit(f"error: --mode {mode!r} is not valid; use console or deploy", code=2)
    raw = config._plain(c.config.get(config.CONFIG_KEY) or {})
    try:
        result = render_deployment(
            raw,
            mode=mode,
            output=Path(output),
            files_dir=Path(files) if files else None,
            secrets_file=Path(secrets_file) if secrets_file else None,
        )
    except OpsError as error:
        raise _fail(error) from None
    print(f"wrote {result.output} ({result.mode} mode)")
    for path in result.files:
        print(f"wrote {path}")
    for user, (password, saved) in result.generated.items():
        print(f"generated a password for registry user {user}: {password}")
        print(f"  saved in {saved} (mode 0600); it is not shown again")
    if result.mode == "console":
        print(
            "warning: the user data contains the S3 keys and password hashes, and Hetzner "
            "keeps user data readable on the server; use inv deploy to keep secrets out of it",
            file=sys.stderr,
        )


namespace = Collection(render)
namespace.configure({config.CONFIG_KEY: config.defaults()})

# --- sandbox: local Debian 12 hosts booted with systemd-nspawn (ops/sandbox/tasks.py) ---
from ops.sandbox.tasks import sandbox  # noqa: E402 (kept in this separate section)

namespace.add_collection(sandbox)
# --- end of sandbox ---

# --- day-two operations over SSH (ops/daytwo/tasks.py) ---
from ops.daytwo.tasks import TASKS as DAYTWO_TASKS  # noqa: E402 (kept in this separate section)

for daytwo_task in DAYTWO_TASKS:
    namespace.add_task(daytwo_task)
# --- end of day-two operations ---

# --- diagnose: every troubleshooting check in one SSH round trip (ops/diagnose/tasks.py) ---
from ops.diagnose.tasks import diagnose  # noqa: E402 (kept in this separate section)

namespace.add_task(diagnose)
# --- end of diagnose ---
