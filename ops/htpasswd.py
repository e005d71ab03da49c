"""htpasswd files with bcrypt hashes, the only scheme zot accepts besides plain crypt.

zot reads `user:hash` lines and verifies bcrypt ($2a$, $2b$, $2y$); Apache's
MD5 ($apr1$) hashes are rejected, so `htpasswd -m` output would lock users out.
"""

from __future__ import annotations

import bcrypt

from .errors import ConfigError
from .secrets import Secret

# bcrypt's cost factor: 2^12 rounds, the library's default, about 0.2 s per hash here.
ROUNDS = 12
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


def hash_password(password: Secret, rounds: int = ROUNDS) -> str:
    """Hash PASSWORD with bcrypt; bcrypt uses at most the first 72 bytes."""
    raw = password.reveal().encode("utf-8")
    if len(raw) > 72:
        raise ConfigError(
            "a registry password is longer than 72 bytes, which bcrypt would silently "
            "truncate; use a shorter one"
        )
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=rounds)).decode("ascii")


def verify(password: Secret, hashed: str) -> bool:
    if not hashed.startswith(_BCRYPT_PREFIXES):
        return False
    try:
        return bcrypt.checkpw(password.reveal().encode("utf-8"), hashed.encode("ascii"))
    except ValueError:
        return False


def parse(text: str) -> dict[str, str]:
    """Parse htpasswd content into {user: hash}, keeping the order of the file."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise ConfigError(f"htpasswd line {number} is not USER:HASH")
        entries[user] = hashed
    return entries


def format_entries(entries: dict[str, str]) -> str:
    """Render {user: hash} as htpasswd content, one line each, newline-terminated."""
    for user, hashed in entries.items():
        if ":" in user or "\n" in user or "\n" in hashed:
            raise ConfigError(f"user name {user!r} cannot be written to an htpasswd file")
        if not hashed.startswith(_BCRYPT_PREFIXES):
            raise ConfigError(f"the hash for {user!r} is not bcrypt; zot accepts only bcrypt")
    return "".join(f"{user}:{hashed}\n" for user, hashed in entries.items())
