"""Invoke tasks for day-two operations; tasks.py at the project root imports them.

Each task loads the settings, picks the servers (--host, or those deploy
recorded), runs its ops.daytwo function on every server in parallel and
prints one result line per server. Any failed server makes the task exit 1.
"""

from __future__ import annotations

import functools
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from .. import config, passwords, prompt, state
from ..config import Settings
from ..errors import ConfigError, OpsError
from ..remote import hosts as host_results
from ..secrets import Secret, SecretSource, password_variable
from . import autoupdate, caddy_upgrade, common, s3, users
from . import logs as log_sources
from . import service as service_ops

HOST_HELP = "servers to work on, comma-separated host[:port] (default: those deploy recorded)"
DRY_RUN_HELP = "probe the servers and print what would change, without changing anything"
BREAK_LOCK_HELP = "remove a change lock left behind by a run that died, then proceed"
SECRETS_FILE_HELP = "a mode 0600 KEY=VALUE file with secrets (default: environment only)"


def _settings(c) -> Settings:
    try:
        return config.load_settings(c)
    except OpsError as error:
        raise Exit(f"error: {error}", code=1) from None


def _source(secrets_file: str | None) -> SecretSource:
    try:
        return SecretSource.load(secrets_file=Path(secrets_file) if secrets_file else None)
    except OpsError as error:
        raise Exit(f"error: {error}", code=1) from None


def _run(settings: Settings, host: str | None, work: common.Work) -> list[host_results.HostResult]:
    try:
        return common.run_task(settings, host, work)
    except OpsError as error:
        raise Exit(f"error: {error}", code=1) from None


def _finish(results: Sequence[host_results.HostResult], dry_run: bool = False) -> None:
    """Print the result of every server; exit 1 when any failed."""
    print()
    print(("dry run, nothing changed:\n" if dry_run else "") + host_results.summary(results))
    failed = [result for result in results if result.failed]
    if failed:
        raise Exit(f"error: {len(failed)} of {len(results)} servers failed", code=1)


def _succeeded(results: Sequence[host_results.HostResult]) -> bool:
    return any(not result.failed for result in results)


@task(
    auto_shortflags=False,
    help={
        "host": HOST_HELP,
        "bucket": "also switch to this bucket (set deployment.storage.bucket to match)",
        "location": "also switch to this Object Storage location: fsn1, nbg1 or hel1",
        "endpoint": "also switch to this S3 endpoint URL (default: derived from the location)",
        "dry-run": DRY_RUN_HELP,
        "break-lock": BREAK_LOCK_HELP,
        "secrets-file": SECRETS_FILE_HELP,
    },
)
def set_s3_credentials(
    c,
    host=None,
    bucket=None,
    location=None,
    endpoint=None,
    dry_run=False,
    break_lock=False,
    secrets_file=None,
):
    """Replace zot's Object Storage keys; zot restarts and must read its storage, or both roll back.

    The keys come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the
    environment or the secrets file, or are asked for on a terminal. They are
    never taken from the command line.
    """
    settings = _settings(c)
    source = _source(secrets_file)
    try:
        settings = s3.storage_with(settings, bucket=bucket, location=location, endpoint=endpoint)
        access_key, secret_key = s3.read_keys(source, s3.terminal_prompt())
    except OpsError as error:
        raise Exit(f"error: {error}", code=1) from None
    work = functools.partial(
        s3.set_s3_credentials,
        settings=settings,
        access_key=access_key,
        secret_key=secret_key,
        admin=common.admin_credentials(settings, source),
        dry_run=dry_run,
        break_lock=break_lock,
    )
    results = _run(settings, host, work)
    if (bucket or location or endpoint) and not dry_run and _succeeded(results):
        print(
            "note: the storage settings changed on the servers; set deployment.storage to "
            "match, or the next deploy switches back"
        )
    _finish(results, dry_run)


def _new_password(source: SecretSource, ask: bool) -> users.ChosenPassword:
    given = source.get(users.NEW_PASSWORD_VARIABLE)
    if given is None and ask:
        if not prompt.interactive():
            raise ConfigError("--prompt needs a terminal; set ZOT_NEW_PASSWORD instead")
        first = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != first:
            raise ConfigError("the two passwords differ; nothing was changed")
        given = Secret(first)
    return users.choose_password(given)


def _report_password(
    settings: Settings, user: str, chosen: users.ChosenPassword, source: SecretSource
) -> None:
    """Save the password in the local state and show it once if it was generated."""
    path = passwords.password_file(settings, user)
    state.write_private(path, chosen.secret.reveal() + "\n")
    if chosen.generated:
        print(f"generated password for registry user {user}: {chosen.secret.reveal()}")
        print("  it is not shown again")
    print(f"  saved in {path} (mode 0600)")
    if source.get(password_variable(user)) is not None:
        print(
            f"note: {password_variable(user)} in your environment or secrets file still has the "
            "old password; update it, or the next deploy sets the old password again"
        )


@task(
    auto_shortflags=False,
    help={
        "user": "the registry user whose password changes",
        "prompt": "type the new password on the terminal (default: ZOT_NEW_PASSWORD from the "
        "environment or secrets file, else a generated one)",
        "host": HOST_HELP,
        "dry-run": DRY_RUN_HELP,
        "break-lock": BREAK_LOCK_HELP,
        "secrets-file": SECRETS_FILE_HELP,
    },
)
def rotate_password(
    c, user, prompt=False, host=None, dry_run=False, break_lock=False, secrets_file=None
):
    """Give a registry user a new password; the new one must log in and the old one must not.

    The password is hashed here and uploaded inside the htpasswd file. A
    generated password is printed once and saved in .zot-hetzner/<name>/passwords.
    """
    settings = _settings(c)
    source = _source(secrets_file)
    try:
        chosen = _new_password(source, prompt)
    except OpsError as error:
        raise Exit(f"error: {error}", code=1) from None
    old = common.known_password(settings, source, user)
    work = functools.partial(
        users.rotate_password,
        user=user,
        new_password=chosen.secret,
        old_password=old,
        dry_run=dry_run,
        break_lock=break_lock,
    )
    results = _run(settings, host, work)
    if not dry_run and _succeeded(results):
        _report_password(settings, user, chosen, source)
    _finish(results, dry_run)


@task(
    auto_shortflags=False,
    help={
        "name": "the new registry user",
        "role": "admin, push or read; needed when the user is not in deployment.users",
        "host": HOST_HELP,
        "dry-run": DRY_RUN_HELP,
        "break-lock": BREAK_LOCK_HELP,
        "secrets-file": SECRETS_FILE_HELP,
    },
)
def add_user(c, name, role=None, host=None, dry_run=False, break_lock=False, secrets_file=None):
    """Add a registry user to htpasswd and zot's access control; the user must log in afterwards.

    The password is ZOT_PASSWORD_<NAME>, or the one saved locally, or a
    generated one that is printed once and saved.
    """
    settings = _settings(c)
    source = _source(secrets_file)
    try:
        effective, user = users.settings_adding(settings, name, role)
        known = common.known_password(settings, source, name)
        chosen = users.choose_password(known)
    except OpsError as error:
        raise Exit(f"error: {error}", code=1) from None
    work = functools.partial(
        users.add_user,
        settings=effective,
        user=user,
        password=chosen.secret,
        dry_run=dry_run,
        break_lock=break_lock,
    )
    results = _run(settings, host, work)
    if not dry_run and _succeeded(results):
        if chosen.generated:
            _report_password(settings, name, chosen, source)
        if effective is not settings:
            print(
                f"note: add {name} (role {user.role}) to deployment.users, or the next deploy removes it"
            )
    _finish(results, dry_run)


@task(
    auto_shortflags=False,
    help={
        "name": "the registry user to remove",
        "host": HOST_HELP,
        "dry-run": DRY_RUN_HELP,
        "break-lock": BREAK_LOCK_HELP,
        "secrets-file": SECRETS_FILE_HELP,
    },
)
def remove_user(c, name, host=None, dry_run=False, break_lock=False, secrets_file=None):
    """Remove a registry user from htpasswd and zot's access control; its password stops working."""
    settings = _settings(c)
    source = _source(secrets_file)
    try:
        effective = users.settings_removing(settings, name)
    except OpsError as error:
        raise Exit(f"error: {error}", code=1) from None
    work = functools.partial(
        users.remove_user,
        settings=effective,
        name=name,
        old_password=common.known_password(settings, source, name),
        dry_run=dry_run,
        break_lock=break_lock,
    )
    results = _run(settings, host, work)
    if not dry_run and not host_results.any_failed(results):
        path = passwords.password_file(settings, name)
        if path.exists():
            path.unlink()
            print(f"removed the saved password {path}")
        if any(user.name == name for user in settings.users):
            print(f"note: remove {name} from deployment.users, or the next deploy adds it back")
    _finish(results, dry_run)


@task(auto_shortflags=False, help={"host": HOST_HELP})
def list_users(c, host=None):
    """List the registry users on each server with their roles, compared with deployment.users."""
    settings = _settings(c)
    _finish(_run(settings, host, functools.partial(users.list_users, settings=settings)))


@task(
    auto_shortflags=False,
    help={
        "version": "Caddy release to install, such as 2.10.2, or latest (default: deployment.caddy.version)",
        "local-download": "download the release on this machine and upload it, for servers without internet access",
        "host": HOST_HELP,
        "dry-run": DRY_RUN_HELP,
        "break-lock": BREAK_LOCK_HELP,
    },
)
def upgrade_caddy(
    c, version=None, local_download=False, host=None, dry_run=False, break_lock=False
):
    """Install a Caddy release after checking its SHA-512, version and the current Caddyfile.

    The previous binary stays at /usr/local/bin/caddy.previous; when Caddy
    does not serve HTTPS after the restart, it is put back.
    """
    settings = _settings(c)
    try:
        wanted = caddy_upgrade.requested_version(version, settings)
        local = None
        if local_download:
            wanted = caddy_upgrade.resolve_locally(settings, wanted)
            local = caddy_upgrade.LocalDownloads()
    except OpsError as error:
        raise Exit(f"error: {error}", code=1) from None
    work = functools.partial(
        caddy_upgrade.upgrade_caddy,
        settings=settings,
        version=wanted,
        local=local,
        dry_run=dry_run,
        break_lock=break_lock,
    )
    _finish(_run(settings, host, work), dry_run)


@task(
    auto_shortflags=False,
    help={
        "source": "which log: " + log_sources.SOURCE_HELP + " (default: zot)",
        "lines": "how many of the last lines to show (default: 100)",
        "since": 'only journal entries since this time, e.g. "1 hour ago" or "2025-01-06 10:00"',
        "follow": "keep printing new lines until Ctrl-C",
        "host": HOST_HELP,
    },
)
def logs(c, source="zot", lines=100, since=None, follow=False, host=None):
    """Show a log of the registry on each server, each line prefixed by the server's name."""
    settings = _settings(c)
    try:
        log_sources.log_command(source, lines=int(lines), since=since, follow=follow)
    except OpsError as error:
        raise Exit(f"error: {error}", code=2) from None
    work = functools.partial(
        log_sources.show_logs, source=source, lines=int(lines), since=since, follow=follow
    )
    try:
        results = _run(settings, host, work)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return
    if host_results.any_failed(results):
        _finish(results)


@task(
    auto_shortflags=False,
    help={
        "run": "run podman auto-update now (takes the change lock)",
        "dry-run": "ask podman which containers have a newer image, changing nothing",
        "journal": "show the journal of podman-auto-update.service",
        "lines": "journal lines with --journal (default: 50)",
        "host": HOST_HELP,
        "break-lock": BREAK_LOCK_HELP,
    },
)
def auto_update(c, run=False, dry_run=False, journal=False, lines=50, host=None, break_lock=False):
    """Show the podman auto-update timer, its last run and the zot container's update label.

    With --dry-run, list pending image updates; with --run, update now and
    check that zot responds; with --journal, show the update service's journal.
    """
    if sum(bool(flag) for flag in (run, dry_run, journal)) > 1:
        raise Exit("error: choose one of --run, --dry-run and --journal", code=2)
    settings = _settings(c)
    if run:
        work = functools.partial(autoupdate.run_now, break_lock=break_lock)
    elif dry_run:
        work = autoupdate.dry_run
    elif journal:
        work = functools.partial(autoupdate.journal, lines=int(lines))
    else:
        work = autoupdate.status
    _finish(_run(settings, host, work))


@task(auto_shortflags=False, help={"host": HOST_HELP})
def status(c, host=None):
    """Show whether zot and Caddy run and respond, the auto-update timer, the lock and the last change."""
    settings = _settings(c)
    _finish(_run(settings, host, functools.partial(service_ops.status, settings=settings)))


@task(
    auto_shortflags=False,
    help={
        "service": "zot, caddy or both (default: both)",
        "host": HOST_HELP,
        "dry-run": DRY_RUN_HELP,
        "break-lock": BREAK_LOCK_HELP,
    },
)
def restart(c, service="both", host=None, dry_run=False, break_lock=False):
    """Restart zot, Caddy or both, and wait until they respond again."""
    settings = _settings(c)
    work = functools.partial(
        service_ops.restart,
        settings=settings,
        service=service,
        dry_run=dry_run,
        break_lock=break_lock,
    )
    _finish(_run(settings, host, work), dry_run)


TASKS = (
    set_s3_credentials,
    rotate_password,
    add_user,
    remove_user,
    list_users,
    upgrade_caddy,
    logs,
    auto_update,
    status,
    restart,
)
