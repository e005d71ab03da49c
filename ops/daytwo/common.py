"""Pieces every day-two task shares: the checks after a zot restart, the
optional change lock, admin credentials and running on the selected servers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from .. import layout, passwords
from ..config import Settings
from ..errors import VerificationError
from ..remote import checks
from ..remote.change import ChangeResult, Step
from ..remote.connect import connect_for, select_targets
from ..remote.execute import host_of
from ..remote.hosts import HostOutput, HostResult, Outcome, change_status, run_on_hosts
from ..remote.lock import change_lock
from ..secrets import Secret, SecretSource, password_variable

ZOT_BASE = f"http://{layout.ZOT_ADDRESS}:{layout.ZOT_PORT}"
ZOT_V2 = f"{ZOT_BASE}/v2/"
ZOT_CATALOG = f"{ZOT_BASE}/v2/_catalog"
# Seconds zot gets to respond again after a restart; the first start may pull an image.
ZOT_TIMEOUT = 120
# Seconds the storage read gets once zot responds: an S3 error is a response, so
# this only covers a slow first listing, not a start.
STORAGE_TIMEOUT = 30
CADDY_TIMEOUT = 60

Work = Callable[[Any, HostOutput], Outcome]


def zot_checks(timeout: float | None = None) -> list[Step]:
    """Build the checks that zot.service runs and zot requests credentials (401) on 127.0.0.1:5000."""
    timeout = ZOT_TIMEOUT if timeout is None else timeout
    return [
        Step(
            f"{layout.ZOT_UNIT} is active",
            action=lambda conn: checks.wait_unit_active(conn, layout.ZOT_UNIT, timeout=timeout),
        ),
        Step(
            f"zot responds at {ZOT_V2}",
            action=lambda conn: checks.wait_http(conn, ZOT_V2, {401}, timeout=timeout),
        ),
    ]


def login_check(
    user: str, password: Secret, *, accepted: bool, timeout: float | None = None
) -> Step:
    """Build a check that USER logs in to zot with PASSWORD (200) or, unless ACCEPTED, is rejected (401)."""
    timeout = ZOT_TIMEOUT if timeout is None else timeout
    expected = 200 if accepted else 401
    verb = "logs in" if accepted else "is rejected"

    def probe(conn: Any) -> None:
        try:
            checks.wait_http(
                conn, ZOT_V2, {expected}, credentials=(user, password), timeout=timeout
            )
        except VerificationError:
            what = "the new" if accepted else "the old"
            raise VerificationError(
                f"{user} with {what} password got a response other than HTTP {expected} "
                f"from zot on {host_of(conn)}"
            ) from None

    label = "new" if accepted else "old"
    return Step(
        f"{user} {verb} with the {label} password", action=probe, rerun_after_rollback=False
    )


def storage_check(admin: tuple[str, Secret], timeout: float | None = None) -> Step:
    """Build a check that zot lists its repositories, which reads the storage backend."""
    timeout = STORAGE_TIMEOUT if timeout is None else timeout
    return Step(
        f"zot reads its storage ({ZOT_CATALOG} as {admin[0]})",
        action=lambda conn: checks.wait_http(
            conn, ZOT_CATALOG, {200}, credentials=admin, timeout=timeout
        ),
    )


def admin_credentials(settings: Settings, source: SecretSource) -> tuple[str, Secret] | None:
    """Return (name, password) of the first admin user whose password is known here."""
    for user in settings.users:
        if user.role != "admin":
            continue
        password = known_password(settings, source, user.name)
        if password is not None:
            return user.name, password
    return None


def known_password(settings: Settings, source: SecretSource, user: str) -> Secret | None:
    """Return USER's password from ZOT_PASSWORD_<USER> or the local state, or None."""
    given = source.get(password_variable(user))
    if given is not None:
        return given
    path = passwords.password_file(settings, user)
    if path.exists():
        return Secret(path.read_text().strip())
    return None


@contextlib.contextmanager
def maybe_locked(
    conn: Any, task: str, *, dry_run: bool, break_lock: bool, out: Callable[[str], None]
) -> Iterator[None]:
    """Hold the change lock unless this is a dry run, which changes nothing."""
    if dry_run:
        yield
        return
    with change_lock(conn, task, break_lock=break_lock, out=out):
        yield


def outcome(result: ChangeResult) -> Outcome:
    """Turn RESULT into the server's result: the status, then the files and steps it names."""
    detail = ", ".join(result.files + result.steps) if result.changed else ""
    return Outcome(change_status(result.changed, result.dry_run), detail)


def run_task(
    settings: Settings, hosts: str | None, work: Work, *, stream: TextIO | None = None
) -> list[HostResult]:
    """Run WORK on the servers named by HOSTS, or on those deploy recorded."""
    targets = select_targets(settings.name, settings.ssh.port, hosts)
    return run_on_hosts(targets, lambda target: connect_for(settings, target), work, stream=stream)
