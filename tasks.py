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


def _secret_source(secrets_file):
    from ops.secrets import SecretSource

    return SecretSource.load(secrets_file=Path(secrets_file) if secrets_file else None)


@task(
    help={
        "provider": "hetzner (default): a server on Hetzner Cloud; local: a sandbox host "
        "on this machine (needs root and systemd-nspawn)",
        "dry-run": "read the project and print what would be created; change nothing",
        "secrets-file": "a mode 0600 KEY=VALUE file with secrets (default: environment only)",
        "skip-dns-check": "do not wait for the domain's A/AAAA records to point at the server",
        "dns-timeout": "seconds to wait for the DNS records (default 600)",
        "cloud-init-timeout": "seconds to wait for the first boot to finish (default 1500)",
    }
)
def deploy(
    c,
    provider="hetzner",
    dry_run=False,
    secrets_file=None,
    skip_dns_check=False,
    dns_timeout=600,
    cloud_init_timeout=1500,
):
    """Create the server if needed and bring the registry up; safe to run again."""
    from ops.converge import Timeouts
    from ops.deploy import deploy as run_deploy

    try:
        settings = config.load_settings(c)
        timeouts = Timeouts(dns=float(dns_timeout), cloud_init=float(cloud_init_timeout))
        outcome = run_deploy(
            settings,
            provider=provider,
            dry_run=dry_run,
            source=_secret_source(secrets_file),
            timeouts=timeouts,
            check_dns=not skip_dns_check,
        )
    except OpsError as error:
        raise _fail(error) from None
    except ValueError as error:
        raise Exit(f"error: a timeout is not a number ({error})", code=2) from None
    if outcome.dry_run:
        print("dry run: nothing was created or changed")
        return
    record = outcome.record
    addresses = ", ".join(a for a in (record.ipv4, record.ipv6) if a)
    print(f"server {record.name}: {addresses or record.ssh_host}")
    if record.ipv4:
        print(f"DNS: A    {settings.domain} -> {record.ipv4}")
    if record.ipv6:
        print(f"DNS: AAAA {settings.domain} -> {record.ipv6}")
    print("changes: " + ("; ".join(outcome.changes) if outcome.changes else "none"))
    for user, (password, path) in outcome.generated.items():
        print(f"generated a password for registry user {user}: {password}")
        print(f"  saved in {path} (mode 0600); it is not shown again")
    admin = next(user.name for user in settings.users if user.role == "admin")
    print(f"registry ready at {outcome.registry_url}")
    print(f"log in with: podman login {settings.domain} --username {admin}")


@task(
    help={
        "provider": "hetzner (default) or local",
        "yes": "do not ask for confirmation (for scripts)",
        "firewall": "also remove the deployment's Hetzner Cloud Firewall",
        "secrets-file": "a mode 0600 KEY=VALUE file with secrets (default: environment only)",
    }
)
def destroy(c, provider="hetzner", yes=False, firewall=False, secrets_file=None):
    """Remove the deployment's server; the Object Storage bucket is never touched."""
    from ops.deploy import destroy as run_destroy

    try:
        settings = config.load_settings(c)
        if not yes:
            if not sys.stdin.isatty():
                raise Exit(
                    "error: destroy needs confirmation; pass --yes to run without a terminal",
                    code=2,
                )
            answer = input(
                f"Delete the server of deployment {settings.name!r}? Type its name to confirm: "
            )
            if answer.strip() != settings.name:
                raise Exit("aborted: nothing was deleted", code=1)
        lines = run_destroy(
            settings,
            provider=provider,
            remove_firewall=firewall,
            source=_secret_source(secrets_file),
        )
    except OpsError as error:
        raise _fail(error) from None
    for line in lines:
        print(line)


namespace = Collection(render, deploy, destroy)
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
