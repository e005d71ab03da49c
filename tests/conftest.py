"""Fixtures shared by the unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def write_ssh_keypair(folder: Path, name: str = "id_ed25519", comment: str = "zot-test") -> Path:
    """Write an Ed25519 key pair in OpenSSH format; return the public key's path."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private_path = folder / name
    private_path.write_bytes(private)
    private_path.chmod(0o600)
    public_path = folder / f"{name}.pub"
    public_path.write_text(public.decode() + f" {comment}\n")
    return public_path


@pytest.fixture
def ssh_public_key(tmp_path: Path) -> Path:
    return write_ssh_keypair(tmp_path)


@pytest.fixture
def base_settings(ssh_public_key: Path) -> dict:
    """A valid raw `deployment` mapping, as Invoke would hand it over."""
    return {
        "name": "registry",
        "domain": "registry.example.com",
        "acme_email": "ops@example.com",
        "ssh": {"public_key": str(ssh_public_key)},
        "storage": {"bucket": "my-registry-storage", "location": "fsn1"},
        "caddy": {"version": "2.10.2"},
        "users": [
            {"name": "admin", "role": "admin"},
            {"name": "ci", "role": "push"},
            {"name": "viewer", "role": "read"},
        ],
    }


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the toolkit's local state at a temporary folder."""
    path = tmp_path / "state"
    monkeypatch.setenv("ZOT_HETZNER_STATE_DIR", str(path))
    return path
