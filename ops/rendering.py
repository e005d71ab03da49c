"""`inv render`: validate the configuration, render the user data and write it out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import caddy, passwords, prompt, state
from .config import parse_settings
from .errors import ConfigError
from .render import Mode, render_files, render_user_data
from .secrets import SecretSource


@dataclass
class RenderResult:
    output: Path
    files: list[Path]
    generated: dict[str, tuple[str, Path]]  # user -> (password, saved at)
    mode: Mode


def _write(path: Path, content: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state.write_atomic(path, content, mode)


def render_deployment(
    raw_settings: dict[str, Any],
    mode: Mode,
    output: Path,
    files_dir: Path | None = None,
    secrets_file: Path | None = None,
    ask: bool | None = None,
) -> RenderResult:
    """Render the deployment described by RAW_SETTINGS and write the results.

    Everything is validated and rendered in memory first, so a bad value
    leaves no file written and no password generated.
    """
    source = SecretSource.load(secrets_file=secrets_file)
    ask = prompt.interactive() if ask is None else ask
    # Deploy-mode user data carries no secret; only the separate files do.
    need_secrets = mode == "console" or files_dir is not None
    typed = prompt.fill_missing(raw_settings, source, ask, need_secrets=need_secrets)
    if typed:
        environ = {**source.environ, **{key: value.reveal() for key, value in typed.items()}}
        source = SecretSource(environ, source.file_values, source.file_path)
    settings = parse_settings(raw_settings)
    if output.exists() and output.is_dir():
        raise ConfigError(
            f"--output {output} is a folder; name a file such as cloud-init-custom.yaml"
        )

    secrets, password_set = None, passwords.PasswordSet(passwords={})
    if need_secrets:
        secrets, password_set = passwords.load_deployment_secrets(settings, source)
    version = caddy.resolve_version(settings)
    user_data = render_user_data(settings, secrets, mode, version)
    files = render_files(settings, secrets, mode, version) if files_dir else {}

    # Console-mode user data embeds the secrets, so only the owner may read it.
    _write(output, user_data, 0o600 if mode == "console" else 0o644)
    written = []
    for rendered in files.values():
        target = files_dir / rendered.path.lstrip("/")
        _write(target, rendered.content, 0o600 if rendered.secret else 0o644)
        written.append(target)
    password_set.save()
    generated = {
        user: (password_set.passwords[user].reveal(), path)
        for user, path in password_set.generated.items()
    }
    return RenderResult(output=output, files=written, generated=generated, mode=mode)
