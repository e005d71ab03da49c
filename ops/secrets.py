"""Secret values and where they come from.

Secrets come from the environment or from a secrets file readable only by its
owner; never from a tracked configuration file or a command-line argument.
"""

from __future__ import annotations

import os
import secrets as _stdlib_secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

MASK = "********"

HCLOUD_TOKEN = "HCLOUD_TOKEN"
AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
PASSWORD_PREFIX = "ZOT_PASSWORD_"
# The file named here supplies any secret that the environment does not.
SECRETS_FILE_VARIABLE = "ZOT_HETZNER_SECRETS_FILE"


class Secret:
    """A secret string whose str() and repr() are masked.

    Call reveal() only where the value is written to a 0600 file, sent on
    stdin or handed to a library that needs it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return _stdlib_secrets.compare_digest(self._value, other._value)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):
        raise TypeError("Secret values are not pickled")


def password_variable(username: str) -> str:
    """Return the environment variable that carries USERNAME's password."""
    return PASSWORD_PREFIX + username.upper().replace("-", "_").replace(".", "_")


def generate_password(length: int = 32) -> Secret:
    """Generate a random password of LENGTH characters (letters and digits).

    Letters and digits only, so the password survives copy and paste and any
    shell without quoting. 32 characters carry about 190 bits.
    """
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return Secret("".join(_stdlib_secrets.choice(alphabet) for _ in range(length)))


def check_private_file(path: Path) -> None:
    """Raise ConfigError unless PATH is a regular file that only its owner can read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"secrets file {path} not found; create it with mode 0600") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"secrets file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"secrets file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
            f"other users can read it. Run: chmod 600 {path}"
        )


def parse_env_file(text: str, source: str) -> dict[str, str]:
    """Parse KEY=VALUE lines; blank lines and lines starting with # are skipped.

    A value may be wrapped in single or double quotes, which are removed. The
    error for a malformed line names its number and never echoes its content,
    since that content may be a secret.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum() or key[0].isdigit():
            raise ConfigError(
                f"{source}, line {number}: expected KEY=VALUE with KEY made of "
                "letters, digits and underscores"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


@dataclass(frozen=True)
class SecretSource:
    """Secrets from the environment, falling back to a 0600 secrets file."""

    environ: Mapping[str, str]
    file_values: Mapping[str, str]
    # The secrets file read, if any; named in messages about missing secrets.
    file_path: Path | None = None

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, secrets_file: Path | None = None
    ) -> SecretSource:
        environ = os.environ if environ is None else environ
        if secrets_file is None and environ.get(SECRETS_FILE_VARIABLE):
            secrets_file = Path(environ[SECRETS_FILE_VARIABLE]).expanduser()
        file_values: dict[str, str] = {}
        if secrets_file is not None:
            check_private_file(secrets_file)
            file_values = parse_env_file(secrets_file.read_text(), str(secrets_file))
        return cls(environ=dict(environ), file_values=file_values, file_path=secrets_file)

    def get(self, name: str) -> Secret | None:
        value = self.environ.get(name) or self.file_values.get(name)
        return Secret(value) if value else None

    def where(self) -> str:
        """Say where a missing secret was looked for and where it can go."""
        if self.file_path is not None:
            return f"it is neither in the environment nor in {self.file_path}; add it to either"
        return (
            "export it, or put it as KEY=VALUE in a mode 0600 file named by "
            f"{SECRETS_FILE_VARIABLE} or --secrets-file"
        )

    def require(self, name: str, purpose: str) -> Secret:
        value = self.get(name)
        if value is None:
            raise ConfigError(f"{name} is not set ({purpose}); {self.where()}")
        return value
