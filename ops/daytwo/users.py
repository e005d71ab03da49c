"""Registry users on running servers: rotate-password, add-user, remove-user, list-users.

Passwords are hashed here with bcrypt and reach a server only inside the
htpasswd file, uploaded over SFTP. After a change zot restarts, and the
checks log in through 127.0.0.1:5000 with curl, which reads the credentials
from its standard input: the new password must be accepted and the old one
rejected. Roles live in zot's config.json (accessControl), rendered from
deployment.users, so adding or removing a user rewrites both files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .. import htpasswd, layout
from ..config import Settings, User, format_errors
from ..errors import ConfigError, OpsError
from ..remote import facts
from ..remote.change import DesiredFile, Step, apply_change, restart_step
from ..remote.execute import host_of
from ..remote.hosts import OK, HostOutput, Outcome
from ..render import RenderedFile, render_zot_config
from ..secrets import Secret, generate_password
from . import common

TASK_ROTATE = "rotate-password"
TASK_ADD = "add-user"
TASK_REMOVE = "remove-user"
# Environment variable with the password that rotate-password sets, for unattended runs.
NEW_PASSWORD_VARIABLE = "ZOT_NEW_PASSWORD"  # noqa: S105 - a variable name


@dataclass(frozen=True)
class ChosenPassword:
    """A password for a user, and whether it was generated just now (then shown once)."""

    secret: Secret
    generated: bool


def choose_password(given: Secret | None) -> ChosenPassword:
    if given is not None:
        if len(given.reveal()) < 12:
            raise ConfigError("the new password is shorter than 12 characters; choose a longer one")
        return ChosenPassword(given, generated=False)
    return ChosenPassword(generate_password(), generated=True)


def with_users(settings: Settings, users: list[User]) -> Settings:
    """Return SETTINGS with USERS in place of deployment.users, validated again."""
    data = settings.model_dump()
    data["users"] = [user.model_dump() for user in users]
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_errors(error)) from None


def settings_adding(settings: Settings, name: str, role: str | None) -> tuple[Settings, User]:
    """Return settings that include user NAME, and that user; ROLE is needed if NAME is new."""
    for user in settings.users:
        if user.name == name:
            if role is not None and role != user.role:
                raise ConfigError(
                    f"user {name} has role {user.role} in deployment.users, not {role}; "
                    "change it there, or leave out --role"
                )
            return settings, user
    if role is None:
        raise ConfigError(
            f"user {name!r} is not in deployment.users; add it there with a role, "
            "or pass --role admin|push|read"
        )
    try:
        user = User(name=name, role=role)
    except ValidationError as error:
        raise ConfigError(format_errors(error, prefix="user")) from None
    return with_users(settings, [*settings.users, user]), user


def settings_removing(settings: Settings, name: str) -> Settings:
    remaining = [user for user in settings.users if user.name != name]
    if not any(user.role == "admin" for user in remaining):
        raise ConfigError(f"{name} is the last admin; add another admin before removing it")
    return with_users(settings, remaining)


def read_htpasswd(conn: Any) -> dict[str, str]:
    """Return {user: hash} from the server's htpasswd; {} when the file does not exist."""
    if not facts.file_state(conn, layout.ZOT_HTPASSWD).exists:
        return {}
    return htpasswd.parse(facts.read_file(conn, layout.ZOT_HTPASSWD))


def htpasswd_file(entries: dict[str, str]) -> DesiredFile:
    rendered = RenderedFile(
        layout.ZOT_HTPASSWD, htpasswd.format_entries(entries), 0o600, secret=True
    )
    return DesiredFile.from_rendered(rendered)


def config_file(settings: Settings) -> DesiredFile:
    return DesiredFile.from_rendered(
        RenderedFile(layout.ZOT_CONFIG, render_zot_config(settings), 0o600)
    )


def _apply_with_restart(
    conn: Any,
    task: str,
    files: list[DesiredFile],
    checks: list[Step],
    dry_run: bool,
    out: HostOutput,
) -> Outcome:
    """Apply FILES, restart zot when one changed, then run CHECKS (or only plan, in a dry run)."""
    result = apply_change(
        conn,
        task=task,
        files=files,
        steps=[restart_step(layout.ZOT_UNIT)],
        checks=checks,
        dry_run=dry_run,
        out=out,
    )
    return common.outcome(result)


def rotate_password(
    conn: Any,
    out: HostOutput,
    *,
    user: str,
    new_password: Secret,
    old_password: Secret | None,
    dry_run: bool = False,
    break_lock: bool = False,
) -> Outcome:
    """Replace USER's hash in htpasswd on one server; the new password must work, the old must not."""
    checks = common.zot_checks()
    checks.append(common.login_check(user, new_password, accepted=True))
    if old_password is not None and old_password != new_password:
        checks.append(common.login_check(user, old_password, accepted=False))
    with common.maybe_locked(conn, TASK_ROTATE, dry_run=dry_run, break_lock=break_lock, out=out):
        entries = read_htpasswd(conn)
        if user not in entries:
            raise OpsError(
                f"user {user} is not in {layout.ZOT_HTPASSWD} on {host_of(conn)}; "
                f"add it with: inv add-user {user}"
            )
        # A new bcrypt salt makes every rotation a change, even to the same password.
        entries[user] = htpasswd.hash_password(new_password)
        return _apply_with_restart(
            conn, TASK_ROTATE, [htpasswd_file(entries)], checks, dry_run, out
        )


def add_user(
    conn: Any,
    out: HostOutput,
    *,
    settings: Settings,
    user: User,
    password: Secret,
    dry_run: bool = False,
    break_lock: bool = False,
) -> Outcome:
    """Add USER to htpasswd and zot's access control on one server; the user must log in."""
    checks = [*common.zot_checks(), common.login_check(user.name, password, accepted=True)]
    with common.maybe_locked(conn, TASK_ADD, dry_run=dry_run, break_lock=break_lock, out=out):
        entries = read_htpasswd(conn)
        existing = entries.get(user.name)
        if existing is None:
            entries[user.name] = htpasswd.hash_password(password)
        elif not htpasswd.verify(password, existing):
            raise OpsError(
                f"user {user.name} already exists on {host_of(conn)} with another password; "
                f"use inv rotate-password --user {user.name} to change it"
            )
        return _apply_with_restart(
            conn, TASK_ADD, [config_file(settings), htpasswd_file(entries)], checks, dry_run, out
        )


def remove_user(
    conn: Any,
    out: HostOutput,
    *,
    settings: Settings,
    name: str,
    old_password: Secret | None,
    dry_run: bool = False,
    break_lock: bool = False,
) -> Outcome:
    """Remove user NAME from htpasswd and zot's access control on one server."""
    checks = common.zot_checks()
    if old_password is not None:
        checks.append(common.login_check(name, old_password, accepted=False))
    with common.maybe_locked(conn, TASK_REMOVE, dry_run=dry_run, break_lock=break_lock, out=out):
        entries = read_htpasswd(conn)
        entries.pop(name, None)
        return _apply_with_restart(
            conn, TASK_REMOVE, [config_file(settings), htpasswd_file(entries)], checks, dry_run, out
        )


def roles_from_config(text: str) -> dict[str, str]:
    """Return {user: role} from zot's accessControl (the form ops.render writes)."""
    try:
        control = json.loads(text).get("http", {}).get("accessControl", {})
    except (ValueError, AttributeError):
        return {}
    roles: dict[str, str] = {}
    for policy in control.get("repositories", {}).get("**", {}).get("policies", []):
        role = "push" if "create" in policy.get("actions", []) else "read"
        for user in policy.get("users", []):
            roles[user] = role
    for user in control.get("adminPolicy", {}).get("users", []):
        roles[user] = "admin"
    return roles


def list_users(conn: Any, out: HostOutput, *, settings: Settings) -> Outcome:
    """Print the users in htpasswd with their role on the server and in deployment.users."""
    entries = read_htpasswd(conn)
    config = facts.file_state(conn, layout.ZOT_CONFIG)
    server_roles = (
        roles_from_config(facts.read_file(conn, layout.ZOT_CONFIG)) if config.exists else {}
    )
    configured = {user.name: user.role for user in settings.users}
    names = list(entries) + [name for name in configured if name not in entries]
    out(f"{'USER':<24} {'ROLE':<6} NOTE")
    for name in names:
        role = server_roles.get(name) or "-"
        notes = []
        if name not in entries:
            notes.append("in deployment.users but not on the server (inv add-user)")
        elif name not in configured:
            notes.append("not in deployment.users")
        elif configured[name] != role:
            notes.append(f"deployment.users says {configured[name]}")
        out(f"{name:<24} {role:<6} {'; '.join(notes)}".rstrip())
    return Outcome(OK, f"{len(entries)} users")
