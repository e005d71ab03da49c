"""The one way the toolkit changes files on a server.

apply_change() probes each file (SHA-256, mode, owner), compares it with the
expected content and prints what differs: a unified diff for ordinary files,
"(secret content changed)" for secret ones. A dry run stops there.

Otherwise it backs up every file it will replace under layout.BACKUP_DIR. It
uploads the new content to a temp name in the same directory over SFTP, with
the mode set before any byte is written, validates the temp file and renames
it into place. Then it runs the restart steps and the checks. On any failure
it restores the backups, runs the restart steps again and raises
RolledBackError. When the restore fails too, RestoreFailedError lists the
commands to run by hand. Each change appends a line to the server's audit log.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import layout
from ..errors import OpsError
from . import audit, commands, facts
from .connect import UnreachableError
from .execute import ConnectionLostError, host_of, run, upload

Output = Callable[[str], None]
SECRET_CHANGED = "(secret content changed)"  # noqa: S105 - a marker, not a password
# Backups older than the newest KEEP_BACKUPS changes are removed after a change.
KEEP_BACKUPS = 20
# Attempts and first pause (seconds, doubled each time) to reach a server
# again for a rollback after the SSH session broke.
RECONNECT_ATTEMPTS = 4
RECONNECT_PAUSE = 2.0


class RolledBackError(OpsError):
    """A change failed and the server was put back at its previous state."""


class RestoreFailedError(OpsError):
    """A change failed and restoring the previous state failed too."""


@dataclass(frozen=True)
class DesiredFile:
    """The content, mode and owner a file on the server should have.

    VALIDATOR, when given, maps the temp file's path to a command that exits
    non-zero when the content is invalid (for example `caddy validate`).
    SOURCE names a file already on the server (a downloaded binary) to install
    in place of CONTENT; DIGEST is then that file's SHA-256, and no diff is shown.
    """

    path: str
    content: str | bytes | None
    mode: int
    owner: str = "root:root"
    secret: bool = False
    validator: Callable[[str], str] | None = None
    source: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        if (self.content is None) == (self.source is None):
            raise ValueError(f"{self.path}: give either content or a source on the server")
        if self.source is not None and not self.digest:
            raise ValueError(f"{self.path}: a source on the server needs its SHA-256 digest")

    @classmethod
    def from_rendered(
        cls, rendered: Any, validator: Callable[[str], str] | None = None
    ) -> DesiredFile:
        """Build from an ops.render.RenderedFile."""
        return cls(
            path=rendered.path,
            content=rendered.content,
            mode=rendered.mode,
            owner=rendered.owner,
            secret=rendered.secret,
            validator=validator,
        )

    @property
    def data(self) -> bytes:
        if self.content is None:
            raise ValueError(f"{self.path} is installed from {self.source} on the server")
        return self.content.encode("utf-8") if isinstance(self.content, str) else self.content

    @property
    def sha256(self) -> str:
        if self.digest is not None:
            return self.digest
        return hashlib.sha256(self.data).hexdigest()

    @property
    def user_and_group(self) -> tuple[str, str]:
        user, _, group = self.owner.partition(":")
        return user, group or user


@dataclass(frozen=True)
class Step:
    """A restart or a check that runs after the files are in place.

    A step with ALWAYS_CHANGES (a restart the operator asked for, a password
    rotation) runs and reports a change even when no file differs; other
    steps run only when a file changed. COMMAND is what an operator would
    run by hand; ACTION, when given, replaces running COMMAND.
    """

    description: str
    command: str | None = None
    action: Callable[[Any], object] | None = None
    always_changes: bool = False
    # A check of the new state only (the new version runs, the new password
    # works) is not run again after a rollback, where it must fail.
    rerun_after_rollback: bool = True

    def run(self, conn: Any) -> None:
        if self.action is not None:
            self.action(conn)
        elif self.command is not None:
            run(conn, self.command)


def restart_step(unit: str, *, always_changes: bool = False) -> Step:
    return Step(
        description=f"restart {unit}",
        command=commands.systemctl("restart", unit),
        always_changes=always_changes,
    )


@dataclass(frozen=True)
class FilePlan:
    """A wanted file next to what the server has now."""

    desired: DesiredFile
    current: facts.FileState

    @property
    def content_changed(self) -> bool:
        return not self.current.exists or self.current.sha256 != self.desired.sha256

    @property
    def mode_changed(self) -> bool:
        return self.current.exists and self.current.mode != self.desired.mode

    @property
    def owner_changed(self) -> bool:
        wanted = self.desired.user_and_group
        return self.current.exists and (self.current.owner, self.current.group) != wanted

    @property
    def changed(self) -> bool:
        return self.content_changed or self.mode_changed or self.owner_changed

    def summary(self) -> str:
        path = self.desired.path
        if not self.current.exists:
            return f"create {path} (mode {self.desired.mode:04o}, owner {self.desired.owner})"
        parts = []
        if self.content_changed:
            parts.append("content")
        if self.mode_changed:
            parts.append(f"mode {self.current.mode:04o} -> {self.desired.mode:04o}")
        if self.owner_changed:
            parts.append(f"owner {self.current.owner}:{self.current.group} -> {self.desired.owner}")
        return f"update {path}: " + ", ".join(parts)


@dataclass
class ChangeResult:
    """The files and steps apply_change changed (or, in a dry run, would change) on one server."""

    changed: bool
    dry_run: bool
    files: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.changed:
            return "no change"
        done = ", ".join(self.files + self.steps)
        return f"would change: {done}" if self.dry_run else f"changed: {done}"


def unified_diff(plan: FilePlan, old_text: str | None, host: str) -> list[str]:
    """Return diff lines for PLAN; secret files never show their content."""
    if not plan.content_changed:
        return []
    if plan.desired.secret:
        return [SECRET_CHANGED]
    if plan.desired.source is not None:
        return [f"(content replaced by {plan.desired.source})"]
    try:
        new_text = plan.desired.data.decode("utf-8")
    except UnicodeDecodeError:
        return ["(binary content changed)"]
    old_lines = (old_text or "").splitlines(keepends=True)
    new_lines = new_text.splitlines(keepends=True)
    diff = difflib.unified_diff(
        old_lines,
        new_lines,
        fromfile=f"{plan.desired.path} (on {host})" if old_text is not None else "/dev/null",
        tofile=f"{plan.desired.path} (new)",
    )
    return [line.rstrip("\n") for line in diff]


def plan_files(conn: Any, files: Sequence[DesiredFile], out: Output) -> list[FilePlan]:
    """Probe each file, print what would change, and return the plans."""
    plans = []
    for desired in files:
        plan = FilePlan(desired, facts.file_state(conn, desired.path))
        plans.append(plan)
        if not plan.changed:
            out(f"{desired.path}: no change")
            continue
        out(plan.summary())
        old_text = None
        readable = not desired.secret and desired.source is None
        if plan.current.exists and plan.content_changed and readable:
            old_text = facts.read_file(conn, desired.path)
        for line in unified_diff(plan, old_text, host_of(conn)):
            out(f"  {line}")
    return plans


def temp_path(path: str, token: str) -> str:
    """Return a hidden name beside PATH, so the final rename stays within one file system."""
    directory, _, name = path.rpartition("/")
    return f"{directory}/.{name}.zot-hetzner-{token}.tmp"


def backup_name(path: str) -> str:
    return path.strip("/").replace("/", "_")


class _Transaction:
    """The mutable state of one apply_change run: temp files, backups, installed paths."""

    def __init__(self, conn: Any, task: str, out: Output) -> None:
        self.conn = conn
        self.task = task
        self.out = out
        self.token = secrets.token_hex(6)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.backup_dir = f"{layout.BACKUP_DIR}/{stamp}-{task}-{self.token}"
        self.temps: list[str] = []
        self.backups: dict[str, str | None] = {}
        self.installed: list[FilePlan] = []
        self.steps_started = False
        # The step or check that was running, for the error message.
        self.current = "replacing the files"

    def backup(self, plans: Sequence[FilePlan]) -> None:
        if not any(plan.current.exists for plan in plans):
            for plan in plans:
                self.backups[plan.desired.path] = None
            return
        run(self.conn, commands.make_directory(layout.BACKUP_DIR, 0o700))
        run(self.conn, commands.make_directory(self.backup_dir, 0o700))
        for plan in plans:
            path = plan.desired.path
            if plan.current.exists:
                copy = f"{self.backup_dir}/{backup_name(path)}"
                run(self.conn, commands.copy_preserving(path, copy))
                self.backups[path] = copy
            else:
                self.backups[path] = None
        self.out(f"backed up to {self.backup_dir}")

    def stage(self, plans: Sequence[FilePlan]) -> dict[str, str]:
        """Upload every new file to its temp name, set its owner and validate it."""
        staged = {}
        for plan in plans:
            desired = plan.desired
            temp = temp_path(desired.path, self.token)
            self.temps.append(temp)
            user, group = desired.user_and_group
            if desired.source is not None:
                run(
                    self.conn,
                    commands.install_file(desired.source, temp, desired.mode, user, group),
                )
            else:
                upload(self.conn, temp, desired.data, desired.mode)
                run(self.conn, commands.change_owner(temp, user, group))
            if desired.validator is not None:
                self.out(f"validate {desired.path}")
                run(self.conn, desired.validator(temp))
            staged[desired.path] = temp
        return staged

    def install(self, plans: Sequence[FilePlan], staged: dict[str, str]) -> None:
        for plan in plans:
            # Recorded before the rename: if the session breaks during it, the
            # rollback restores this file too, which is harmless if it did not move.
            self.installed.append(plan)
            run(self.conn, commands.rename(staged[plan.desired.path], plan.desired.path))

    def remove_temps(self) -> None:
        """Remove the temp files; one that cannot be removed is reported and kept in the list."""
        remaining = []
        for temp in self.temps:
            try:
                run(self.conn, commands.remove_file(temp))
            except OpsError:
                self.out(f"could not remove the temp file {temp}; remove it by hand")
                remaining.append(temp)
        self.temps = remaining

    def restore_commands(self, steps: Sequence[Step]) -> list[str]:
        """Return the commands that put the previous files back and restart, for a human."""
        lines = []
        for plan in reversed(self.installed):
            path = plan.desired.path
            copy = self.backups.get(path)
            if copy is None:
                lines.append(commands.remove_file(path))
            else:
                lines.append(commands.copy_preserving(copy, path))
        lines += [step.command for step in steps if step.command]
        return lines

    def restore(self) -> None:
        for plan in reversed(self.installed):
            path = plan.desired.path
            copy = self.backups.get(path)
            if copy is None:
                run(self.conn, commands.remove_file(path))
                continue
            temp = temp_path(path, self.token + "-restore")
            run(self.conn, commands.copy_preserving(copy, temp))
            run(self.conn, commands.rename(temp, path))

    def prune_backups(self) -> None:
        listing = run(self.conn, commands.list_directory(layout.BACKUP_DIR), check=False)
        entries = [line for line in listing.stdout.splitlines() if line.strip()]
        for old in entries[: max(0, len(entries) - KEEP_BACKUPS)]:
            if "/" in old or old in (".", ".."):
                continue
            run(self.conn, commands.remove_tree(f"{layout.BACKUP_DIR}/{old}"), check=False)


def _with_reconnect(conn: Any, action: Callable[[], None], out: Output) -> None:
    """Run ACTION, reopening the SSH session a bounded number of times if it broke."""
    pause = RECONNECT_PAUSE
    for attempt in range(1, RECONNECT_ATTEMPTS + 1):
        try:
            action()
            return
        except (ConnectionLostError, UnreachableError):
            if attempt == RECONNECT_ATTEMPTS:
                raise
            out(f"SSH session lost; reconnecting (attempt {attempt + 1} of {RECONNECT_ATTEMPTS})")
            close = getattr(conn, "close", None)
            # A broken session may fail to close in any way; the next command reopens it.
            with contextlib.suppress(Exception):
                if close is not None:
                    close()
            time.sleep(pause)
            pause *= 2


def _changes(plans: Sequence[FilePlan], steps: Sequence[Step]) -> list[str]:
    described = []
    for plan in plans:
        # Only the path and action: never content, so secrets stay out of the log.
        action = "created" if not plan.current.exists else "updated"
        described.append(f"{action} {plan.desired.path}")
    described += [step.description for step in steps]
    return described


def apply_change(
    conn: Any,
    *,
    task: str,
    files: Sequence[DesiredFile] = (),
    steps: Sequence[Step] = (),
    checks: Sequence[Step] = (),
    dry_run: bool = False,
    out: Output = print,
) -> ChangeResult:
    """Bring FILES to their wanted state on CONN's server, then run STEPS and CHECKS.

    The caller holds the change lock. Raises RolledBackError when a step or
    check failed and the previous state was restored, RestoreFailedError
    when that restore failed too, and the original error when staging or
    validation failed before anything was replaced.
    """
    plans = plan_files(conn, files, out)
    changed = [plan for plan in plans if plan.changed]
    to_run = list(steps) if changed else [step for step in steps if step.always_changes]
    if not changed and not to_run:
        return ChangeResult(changed=False, dry_run=dry_run)
    result = ChangeResult(
        changed=True,
        dry_run=dry_run,
        files=[plan.desired.path for plan in changed],
        steps=[step.description for step in to_run],
    )
    if dry_run:
        for step in to_run:
            out(f"would {step.description}")
        for check in checks:
            out(f"would check: {check.description}")
        return result

    transaction = _Transaction(conn, task, out)
    try:
        transaction.backup(changed)
        staged = transaction.stage(changed)
        transaction.install(changed, staged)
        transaction.remove_temps()
        for step in to_run:
            out(step.description)
            transaction.current = step.description
            transaction.steps_started = True
            step.run(conn)
        for check in checks:
            out(f"check: {check.description}")
            transaction.current = f"check: {check.description}"
            check.run(conn)
    except OpsError as error:
        if not transaction.installed and not transaction.steps_started:
            transaction.remove_temps()
            raise type(error)(f"{error}\nnothing was changed on {host_of(conn)}") from None
        _roll_back(conn, task, transaction, changed, to_run, checks, error, out)
    audit.record(conn, task, "changed", _changes(changed, to_run))
    transaction.prune_backups()
    return result


def _roll_back(
    conn: Any,
    task: str,
    transaction: _Transaction,
    changed: Sequence[FilePlan],
    steps: Sequence[Step],
    checks: Sequence[Step],
    error: OpsError,
    out: Output,
) -> None:
    host = host_of(conn)
    restored = ", ".join(plan.desired.path for plan in transaction.installed)
    failed = f"{task} failed on {host} at '{transaction.current}': {error}"
    out(f"failed: {error}")
    out(f"rolling back: restoring {restored or 'no files'}")
    try:

        def restore_and_restart() -> None:
            transaction.remove_temps()
            transaction.restore()
            for step in steps:
                out(f"{step.description} (rollback)")
                step.run(conn)

        _with_reconnect(conn, restore_and_restart, out)
    except OpsError as restore_error:
        manual = "\n".join(f"  {line}" for line in transaction.restore_commands(steps))
        raise RestoreFailedError(
            f"{failed}\nRestoring the previous state failed too: "
            f"{restore_error}\nTo restore by hand, run on {host} as root:\n{manual}\n"
            f"then remove the change lock: rm -rf {layout.LOCK_DIR}"
        ) from None

    still_failing = []
    for check in (check for check in checks if check.rerun_after_rollback):
        try:
            check.run(conn)
        except OpsError as check_error:
            still_failing.append(f"{check.description}: {check_error}")
    try:
        audit.record(conn, task, "rolled back", _changes(changed, steps))
    except OpsError as audit_error:
        out(f"could not write the audit log: {audit_error}")
    what = f"restored {restored}" if restored else "no file had been replaced"
    rerun = f"; ran {', '.join(step.description for step in steps)} again" if steps else ""
    if still_failing:
        raise RolledBackError(
            f"{failed}\nRolled back ({what}{rerun}), but the "
            f"checks still fail after the rollback: {'; '.join(still_failing)}"
        )
    raise RolledBackError(
        f"{failed}\nRolled back ({what}{rerun}); the host is back at its previous state"
    )
