"""set-s3-credentials: replace the Object Storage keys (and optionally the bucket) of zot.

The keys come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (environment or
secrets file) or a prompt, never from an argument. credentials.env and, when
the storage settings change, config.json are replaced together; zot restarts
and must respond and list its repositories with the new keys, or both files
are restored and zot restarts on the old ones.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .. import layout, prompt
from ..config import Settings, StorageSettings, format_errors
from ..errors import ConfigError
from ..remote.change import DesiredFile, apply_change, restart_step
from ..remote.hosts import HostOutput, Outcome
from ..render import DeploymentSecrets, RenderedFile, render_credentials, render_zot_config
from ..secrets import Secret, SecretSource
from . import common

TASK = "set-s3-credentials"
# The endpoint StorageSettings derives from a location; a derived endpoint
# (and region) follows a new --location, an explicit one is kept.
_DERIVED_ENDPOINT = "https://{location}.your-objectstorage.com"


def storage_with(
    settings: Settings,
    *,
    bucket: str | None = None,
    location: str | None = None,
    endpoint: str | None = None,
) -> Settings:
    """Return SETTINGS with the storage bucket, location or endpoint replaced."""
    if bucket is None and location is None and endpoint is None:
        return settings
    data = settings.storage.model_dump()
    old = settings.storage.location
    if location is not None and endpoint is None:
        if data["endpoint"] == _DERIVED_ENDPOINT.format(location=old):
            data["endpoint"] = None
        if data["region"] == old:
            data["region"] = None
    for key, value in (("bucket", bucket), ("location", location), ("endpoint", endpoint)):
        if value is not None:
            data[key] = value
    try:
        storage = StorageSettings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_errors(error, prefix="storage")) from None
    return settings.model_copy(update={"storage": storage})


def read_keys(
    source: SecretSource, ask: Callable[[str], str] | None = None
) -> tuple[Secret, Secret]:
    """Return the S3 access key and secret key from SOURCE, or typed in when ASK is given."""
    keys = []
    for name, question in prompt.REQUIRED_SECRETS:
        value = source.get(name)
        if value is None and ask is not None:
            typed = ask(f"{question} ({name}): ").strip()
            value = Secret(typed) if typed else None
        if value is None:
            raise ConfigError(
                f"{name} is not set; export it, put it in a mode 0600 secrets file "
                "(--secrets-file), or run on a terminal to be asked. Keys are never "
                "taken from the command line"
            )
        keys.append(value)
    return keys[0], keys[1]


def terminal_prompt() -> Callable[[str], str] | None:
    return getpass.getpass if prompt.interactive() else None


def desired_files(settings: Settings, access_key: Secret, secret_key: Secret) -> list[DesiredFile]:
    secrets = DeploymentSecrets(access_key, secret_key, password_hashes={})
    # Modes as in ops.render.render_files: both files are readable by root only.
    credentials = RenderedFile(
        layout.ZOT_CREDENTIALS, render_credentials(secrets), 0o600, secret=True
    )
    config = RenderedFile(layout.ZOT_CONFIG, render_zot_config(settings), 0o600)
    return [DesiredFile.from_rendered(config), DesiredFile.from_rendered(credentials)]


def set_s3_credentials(
    conn: Any,
    out: HostOutput,
    *,
    settings: Settings,
    access_key: Secret,
    secret_key: Secret,
    admin: tuple[str, Secret] | None,
    dry_run: bool = False,
    break_lock: bool = False,
) -> Outcome:
    """Install new S3 keys (and storage settings) on one server and prove zot can use them."""
    checks = common.zot_checks()
    if admin is not None:
        checks.append(common.storage_check(admin))
    elif not dry_run:
        out(
            "note: no admin password is known here, so the storage read check is skipped; "
            "set ZOT_PASSWORD_<ADMIN> to enable it"
        )
    with common.maybe_locked(conn, TASK, dry_run=dry_run, break_lock=break_lock, out=out):
        result = apply_change(
            conn,
            task=TASK,
            files=desired_files(settings, access_key, secret_key),
            steps=[restart_step(layout.ZOT_UNIT)],
            checks=checks,
            dry_run=dry_run,
            out=out,
        )
    return common.outcome(result)
