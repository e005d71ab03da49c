"""SSH key pairs and minimal user data for sandbox hosts booted without user data of their own."""

from __future__ import annotations

from pathlib import Path

import yaml

from .system import run_step


def generate_keypair(private_key: Path, comment: str = "zot-hetzner-sandbox") -> Path:
    """Create an ed25519 key pair without passphrase at `private_key` unless it exists; return it."""
    if not private_key.exists():
        private_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run_step(
            "generate ssh key pair",
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private_key)],
        )
    return private_key


def public_key_of(private_key: Path) -> str:
    return Path(f"{private_key}.pub").read_text().strip()


def minimal_user_data(public_key: str) -> str:
    """Return cloud-config user data that only authorizes `public_key` (root accepts it too)."""
    return "#cloud-config\n" + yaml.safe_dump({"ssh_authorized_keys": [public_key]})
