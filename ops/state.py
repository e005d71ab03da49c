"""The toolkit's local state for each deployment, kept beside the project.

`.zot-hetzner/<deployment>/` (mode 0700) contains the pinned host keys
(known_hosts), generated passwords (one 0600 file per user) and servers.json,
the record of what deploy created. ZOT_HETZNER_STATE_DIR moves the root.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_ROOT_VARIABLE = "ZOT_HETZNER_STATE_DIR"


def state_root() -> Path:
    return Path(os.environ.get(STATE_ROOT_VARIABLE) or Path.cwd() / ".zot-hetzner")


def deployment_dir(name: str, create: bool = True) -> Path:
    """Return the state folder of deployment NAME, created with mode 0700 when asked."""
    root = state_root()
    path = root / name
    if create:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        path.chmod(0o700)
    return path


def write_atomic(path: Path, content: str, mode: int) -> None:
    """Write CONTENT to PATH through a temp file that has MODE before any byte is written.

    The rename replaces PATH in one step, so a reader never sees half a file
    and a secret never sits in a file that others can read.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_private(path: Path, content: str) -> None:
    """Write CONTENT to PATH atomically with mode 0600, creating its folder with 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, content, 0o600)


def servers_file(name: str) -> Path:
    return deployment_dir(name) / "servers.json"


def read_servers(name: str) -> list[dict[str, Any]]:
    """Return the servers deploy recorded for NAME: [{"name", "id", "ipv4", "ipv6", ...}]."""
    path = deployment_dir(name, create=False) / "servers.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text()).get("servers", []))


def write_servers(name: str, servers: list[dict[str, Any]]) -> None:
    write_private(servers_file(name), json.dumps({"servers": servers}, indent=2) + "\n")
