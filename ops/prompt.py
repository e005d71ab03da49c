"""Ask for missing settings and secrets on a terminal, or list them when there is none."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Mapping
from typing import Any

from . import validate
from .config import parse_settings
from .errors import ConfigError
from .secrets import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, Secret, SecretSource

ATTEMPTS = 3

# (dotted key, question, validator) for the settings that have no default.
REQUIRED_SETTINGS: tuple[tuple[str, str, Callable[[str], str]], ...] = (
    ("domain", "Registry domain (e.g. registry.example.com)", validate.domain),
    ("acme_email", "E-mail for Let's Encrypt notices", validate.email),
    ("storage.bucket", "Object Storage bucket name", validate.bucket),
)
REQUIRED_SECRETS = (
    (AWS_ACCESS_KEY_ID, "Object Storage access key"),
    (AWS_SECRET_ACCESS_KEY, "Object Storage secret key"),
)


def _lookup(raw: Mapping[str, Any], dotted: str) -> Any:
    value: Any = raw
    for part in dotted.split("."):
        if not isinstance(value, Mapping) and not hasattr(value, "get"):
            return None
        value = value.get(part)
        if value is None:
            return None
    return value


def _assign(raw: dict[str, Any], dotted: str, value: str) -> None:
    parts = dotted.split(".")
    target = raw
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _ask(question: str, check: Callable[[str], str], secret: bool) -> str:
    for _ in range(ATTEMPTS):
        answer = (getpass.getpass if secret else input)(f"{question}: ").strip()
        try:
            return check(answer)
        except ValueError as error:
            print(f"  {answer!r} {error}" if not secret else f"  that value {error}")
    raise ConfigError(f"no valid answer to {question!r} after {ATTEMPTS} attempts")


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("is empty")
    return value


def fill_missing(
    raw: dict[str, Any], source: SecretSource, ask: bool, need_secrets: bool = True
) -> dict[str, Secret]:
    """Complete RAW settings and, when NEED_SECRETS, the S3 secrets, asking on a terminal when ASK.

    Without a terminal nothing is asked: the settings are validated as they
    are, and one ConfigError lists every invalid or missing setting and every
    missing secret. Returns secrets that were typed in, to be used in place of
    the environment.
    """
    missing_settings = [entry for entry in REQUIRED_SETTINGS if not _lookup(raw, entry[0])]
    missing_secrets = [
        entry for entry in REQUIRED_SECRETS if need_secrets and source.get(entry[0]) is None
    ]
    if not ask:
        problems = []
        try:
            parse_settings(raw)
        except ConfigError as error:
            problems.append(str(error))
        for name, _ in missing_secrets:
            problems.append(f"{name} is missing; {source.where()}")
        if missing_settings or missing_secrets:
            problems.append("(on a terminal, render asks for missing values)")
        if problems:
            raise ConfigError("\n".join(problems))
        return {}
    for key, question, check in missing_settings:
        _assign(raw, key, _ask(question, check, secret=False))
    typed: dict[str, Secret] = {}
    for name, question in missing_secrets:
        typed[name] = Secret(_ask(question, _non_empty, secret=True))
    return typed
