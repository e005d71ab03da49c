"""Registry passwords: from the environment, from local state, or generated once.

A password given as ZOT_PASSWORD_<USER> (environment or secrets file) wins.
Otherwise the password saved in the deployment's state folder is reused, and
when there is none a random one is generated, saved with mode 0600 and
reported to the caller so it can be shown exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import htpasswd, state
from .config import Settings
from .errors import ConfigError
from .render import DeploymentSecrets
from .secrets import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    Secret,
    SecretSource,
    generate_password,
    password_variable,
)

MIN_PASSWORD_LENGTH = 12


@dataclass
class PasswordSet:
    """The users' passwords, and which of them were generated just now.

    Generated passwords are kept in memory until save() so that a run that
    fails later writes nothing.
    """

    passwords: dict[str, Secret]
    generated: dict[str, Path] = field(default_factory=dict)

    def save(self) -> None:
        for user, path in self.generated.items():
            if not path.exists():
                state.write_private(path, self.passwords[user].reveal() + "\n")


def password_file(settings: Settings, user: str) -> Path:
    return state.deployment_dir(settings.name, create=False) / "passwords" / user


def load_passwords(settings: Settings, source: SecretSource, generate: bool = True) -> PasswordSet:
    """Return a password for every configured user; generate missing ones when GENERATE."""
    result = PasswordSet(passwords={})
    for user in settings.users:
        given = source.get(password_variable(user.name))
        path = password_file(settings, user.name)
        if given is not None:
            if len(given.reveal()) < MIN_PASSWORD_LENGTH:
                raise ConfigError(
                    f"{password_variable(user.name)} is shorter than {MIN_PASSWORD_LENGTH} "
                    "characters; choose a longer password or unset it to get a generated one"
                )
            result.passwords[user.name] = given
        elif path.exists():
            result.passwords[user.name] = Secret(path.read_text().strip())
        elif generate:
            result.passwords[user.name] = generate_password()
            result.generated[user.name] = path
        else:
            raise ConfigError(
                f"no password for registry user {user.name!r}; set "
                f"{password_variable(user.name)} or run inv render once to generate one"
            )
    return result


def load_deployment_secrets(
    settings: Settings, source: SecretSource, generate: bool = True
) -> tuple[DeploymentSecrets, PasswordSet]:
    """Collect the S3 keys and the users' password hashes a server needs."""
    access_key = source.require(AWS_ACCESS_KEY_ID, "the registry stores images in Object Storage")
    secret_key = source.require(
        AWS_SECRET_ACCESS_KEY, "the registry stores images in Object Storage"
    )
    passwords = load_passwords(settings, source, generate=generate)
    hashes = {name: htpasswd.hash_password(secret) for name, secret in passwords.passwords.items()}
    return DeploymentSecrets(access_key, secret_key, hashes), passwords
