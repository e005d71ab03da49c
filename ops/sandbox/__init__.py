"""Local Debian 12 sandbox hosts, booted with systemd-nspawn, that stand in for Hetzner servers.

`ensure_golden()` builds (once) the root filesystem every host boots from;
`boot()` starts a host from cloud-init user data and returns a `SandboxHost`.
Everything needs root on a Debian 12 machine with systemd-container,
debootstrap and socat (scripts/install-host-packages.sh installs them).
"""

from .forward import Forwarder
from .golden import GoldenRecipe, default_recipe, ensure_golden
from .host import (
    DEFAULT_FORWARDS,
    CloudInitStatus,
    SandboxHost,
    boot,
    down,
    get_host,
    list_hosts,
    new_name,
)
from .keys import generate_keypair, minimal_user_data, public_key_of
from .system import SandboxError

__all__ = [
    "DEFAULT_FORWARDS",
    "CloudInitStatus",
    "Forwarder",
    "GoldenRecipe",
    "SandboxError",
    "SandboxHost",
    "boot",
    "default_recipe",
    "down",
    "ensure_golden",
    "generate_keypair",
    "get_host",
    "list_hosts",
    "minimal_user_data",
    "new_name",
    "public_key_of",
]
