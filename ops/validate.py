"""Validators for deployment settings.

Each function returns the normalised value or raises ValueError with a
message that names what is accepted. The settings model turns that message
into one line naming the key and the rejected value.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

# Hetzner Object Storage regions; the S3 endpoint is https://<location>.your-objectstorage.com.
STORAGE_LOCATIONS = ("fsn1", "nbg1", "hel1")
# Hetzner Cloud server locations (GET /locations, 2026).
SERVER_LOCATIONS = ("fsn1", "nbg1", "hel1", "ash", "hil", "sin")
# The bootstrap targets Debian 12: podman 4.3, cloud-init 22.4, Python 3.11.
SUPPORTED_IMAGES = ("debian-12",)
ROLES = ("admin", "push", "read")

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# RFC 5322 atext without braces, which Caddy would read as a placeholder.
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`|~-]+@([A-Za-z0-9-]+\.)+[A-Za-z]{2,63}$")
_SERVER_TYPE = re.compile(r"^[a-z]{2,4}[0-9]{1,3}[a-z]?$")
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.]+)?$")
# Patterns are applied with fullmatch: "$" alone would accept a trailing newline.
# Distribution reference grammar, reduced to what we accept: a registry host
# (with a dot or a port, or "localhost"), a lower-case path, and a tag or a
# digest or both.
_IMAGE = re.compile(
    r"^(?P<host>(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)(?::[0-9]{1,5})?)"
    r"/(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
_SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def domain(value: str) -> str:
    """Check a DNS name under RFC 1123: dot-separated labels of letters, digits, hyphens."""
    name = value.strip().rstrip(".").lower()
    accepted = "use a fully qualified name such as registry.example.com"
    if "://" in name or "/" in name:
        raise ValueError(f"is a URL, not a domain name; {accepted}, without scheme or path")
    if not name or len(name) > 253:
        raise ValueError(f"is not a domain name of 1 to 253 characters; {accepted}")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValueError(
                "has an invalid label; each label is 1 to 63 letters, digits or hyphens "
                f"and does not start or end with a hyphen ({accepted})"
            )
    if len(labels) < 2:
        raise ValueError(f"has a single label; {accepted}")
    if labels[-1].isdigit():
        raise ValueError(f"ends in a numeric label, like an IP address; {accepted}")
    return name


def deployment_name(value: str) -> str:
    """Check a deployment name: it becomes a server name, a label value and a folder."""
    if not _NAME.fullmatch(value):
        raise ValueError(
            "is not a valid deployment name; use 1 to 32 lower-case letters, digits or "
            "hyphens, starting with a letter, e.g. registry"
        )
    return value


def bucket(value: str) -> str:
    """Check an S3 bucket name under the S3 naming rules."""
    rules = (
        "use 3 to 63 lower-case letters, digits, hyphens or dots, starting and ending "
        "with a letter or digit"
    )
    if not 3 <= len(value) <= 63 or not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", value):
        raise ValueError(f"is not a valid S3 bucket name; {rules}")
    if ".." in value or ".-" in value or "-." in value:
        raise ValueError(f"has a dot next to a dot or a hyphen; {rules}")
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value):
        raise ValueError(f"is formatted like an IP address; {rules}")
    if value.startswith(("xn--", "sthree-")) or value.endswith(("-s3alias", "--ol-s3")):
        raise ValueError("uses a prefix or suffix that S3 reserves (xn--, sthree-, -s3alias)")
    return value


def storage_location(value: str) -> str:
    if value not in STORAGE_LOCATIONS:
        raise ValueError(
            f"is not an Object Storage location; use one of {', '.join(STORAGE_LOCATIONS)}"
        )
    return value


def server_location(value: str) -> str:
    if value not in SERVER_LOCATIONS:
        raise ValueError(
            f"is not a Hetzner Cloud location; use one of {', '.join(SERVER_LOCATIONS)}"
        )
    return value


def server_type(value: str) -> str:
    if not _SERVER_TYPE.fullmatch(value):
        raise ValueError("is not a Hetzner server type name; use a name such as cx23 or cax11")
    return value


def server_image(value: str) -> str:
    if value not in SUPPORTED_IMAGES:
        raise ValueError(
            f"is not supported; the bootstrap is written and tested for {', '.join(SUPPORTED_IMAGES)}"
        )
    return value


def image_reference(value: str) -> str:
    """Check a fully qualified container image reference (registry host, path, tag or digest).

    podman auto-update only works with fully qualified names, so a short name
    such as "zot:latest" is rejected rather than resolved through search registries.
    """
    match = _IMAGE.fullmatch(value)
    if not match or (
        "." not in match["host"] and ":" not in match["host"] and match["host"] != "localhost"
    ):
        raise ValueError(
            "is not a fully qualified image reference; use REGISTRY/PATH:TAG such as "
            "ghcr.io/project-zot/zot-linux-amd64:v2.1.14"
        )
    if not match["tag"] and not match["digest"]:
        raise ValueError("has no tag or digest; pin a version such as :v2.1.14")
    return value


def registry_host(value: str) -> str:
    """Check a HOST:PORT registry address, as podman's registries.conf expects."""
    if not re.fullmatch(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?", value) and not re.fullmatch(
        r"\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?", value
    ):
        raise ValueError("is not a registry address; use HOST or HOST:PORT")
    return value


def username(value: str) -> str:
    """Check a registry user name; htpasswd separates name and hash with a colon."""
    if not _USERNAME.fullmatch(value):
        raise ValueError(
            "is not a valid user name; use 1 to 64 letters, digits, dots, underscores or "
            "hyphens, starting with a letter or digit"
        )
    return value


def ssh_user(value: str) -> str:
    # Day-two tasks write under /etc and run systemctl without sudo.
    if value != "root":
        raise ValueError("is not supported; the toolkit logs in as root, as Hetzner's images allow")
    return value


def role(value: str) -> str:
    if value not in ROLES:
        raise ValueError(
            "is not a role; use admin (everything), push (read and push) or read (pull only)"
        )
    return value


def email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValueError("is not an e-mail address; use a plain address such as ops@example.com")
    return value


def cidr(value: str) -> str:
    """Check an IPv4 or IPv6 network in CIDR notation, host bits unset."""
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        if "host bits set" in str(error):
            fixed = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"has host bits set; use the network address {fixed}") from None
        raise ValueError(
            "is not a CIDR network; use a form such as 203.0.113.0/24 or 2001:db8::/32"
        ) from None
    return str(network)


def port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("is not a TCP port; use a number from 1 to 65535")
    return value


def caddy_version(value: str) -> str:
    text = value.strip().removeprefix("v")
    if value.strip() == "latest":
        return "latest"
    if not _VERSION.fullmatch(text):
        raise ValueError('is not a Caddy version; use "latest" or a release such as 2.10.2')
    return text


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http or https URL")
    if parts.username or parts.password:
        raise ValueError("contains credentials; URLs in the configuration must not carry secrets")
    if any(character.isspace() for character in value):
        raise ValueError("contains white space")
    return value.rstrip("/")


def ssh_public_key(path: Path) -> Path:
    """Check that PATH exists and contains one OpenSSH public key line."""
    expanded = path.expanduser()
    if not expanded.is_file():
        raise ValueError(
            "does not exist; create a key with ssh-keygen -t ed25519 and point "
            "ssh.public_key at the .pub file"
        )
    parse_public_key(expanded.read_text(errors="replace"))
    return expanded


def parse_public_key(text: str) -> tuple[str, bytes, str]:
    """Parse an OpenSSH public key line into (type, key blob, comment)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1:
        raise ValueError(
            "must contain exactly one public key line (the .pub file, not the private key)"
        )
    fields = lines[0].split(None, 2)
    if len(fields) < 2 or fields[0] not in _SSH_KEY_TYPES:
        raise ValueError(
            f"is not an OpenSSH public key; expected a line starting with one of {', '.join(_SSH_KEY_TYPES[:3])}"
        )
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise ValueError("has a key body that is not valid base64") from None
    # The blob starts with the key type as an SSH string (4-byte length + name).
    declared_length = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + declared_length].decode("ascii", "replace") != fields[0]:
        raise ValueError("has a key body that does not match its declared type")
    return fields[0], blob, fields[2].strip() if len(fields) > 2 else ""
