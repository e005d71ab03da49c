"""Paths of the sandbox's golden trees, host instances and runtime handles on this machine."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .system import SandboxError

# Overridden by the environment so tests or a CI job can keep sandboxes elsewhere.
ROOT_VARIABLE = "ZOT_HETZNER_SANDBOX_DIR"
DEFAULT_ROOT = Path("/var/lib/zot-hetzner-sandbox")
RUNTIME_ROOT = Path("/run/zot-hetzner-sandbox")
# Prefix of every machine, network namespace and cgroup name the sandbox creates,
# so they are distinguished from anything else on this machine.
PREFIX = "zhs-"
CGROUP_PARENT = "zot-hetzner-sandbox"

# Host names become machine, netns and cgroup names: keep them DNS-label-like and short.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


def sandbox_root() -> Path:
    return Path(os.environ.get(ROOT_VARIABLE) or DEFAULT_ROOT)


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or name.endswith("-"):
        raise SandboxError(
            f"invalid sandbox host name {name!r}: use 1-31 lower-case letters, digits "
            "and '-', starting with a letter"
        )
    return name


def hosts_dir() -> Path:
    return sandbox_root() / "hosts"


def instance_dir(name: str) -> Path:
    return hosts_dir() / check_name(name)


def runtime_dir(name: str) -> Path:
    return RUNTIME_ROOT / check_name(name)


def machine_name(name: str) -> str:
    return PREFIX + check_name(name)
