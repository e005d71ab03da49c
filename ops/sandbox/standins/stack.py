"""All stand-ins a sandbox deployment needs, started together on this machine's loopback.

A sandbox host reaches each one inside its own network namespace at a fixed
guest port, so the rendered user data can name them before the host boots.
The ports are 3142 (apt proxy), 5001 (image registry), 8701 (Caddy release
server) and 9000 (S3), all on the guest's 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ...secrets import Secret
from ..system import SandboxError
from .apt_proxy import AptProxy
from .caddy_releases import CaddyReleaseServer
from .registry import LocalRegistry
from .s3 import S3Server
from .zot_image import DEFAULT_VERSIONS, REPOSITORY, ZotStandinImage

DEFAULT_WORK_DIR = Path("/var/lib/zot-hetzner-sandbox/standins")
GUEST_PORTS = {"apt-proxy": 3142, "image-registry": 5001, "caddy-releases": 8701, "s3": 9000}
ZOT_TAG = f"{REPOSITORY}:{DEFAULT_VERSIONS[0]}"
# Settings every sandbox deployment needs besides the stand-ins' addresses:
# no ACME server is reachable, so Caddy issues from its own CA.
SANDBOX_SETTINGS: dict[str, Any] = {"tls": "internal"}


class StandinStack:
    """The apt proxy, Caddy releases, image registry (with the zot stand-in) and S3."""

    def __init__(
        self, work_dir: Path = DEFAULT_WORK_DIR, *, check_credentials: bool = True
    ) -> None:
        self.work_dir = Path(work_dir)
        self.apt = AptProxy(self.work_dir / "apt")
        self.caddy = CaddyReleaseServer(self.work_dir / "caddy", architectures=("amd64",))
        self.registry = LocalRegistry(self.work_dir / "registry")
        self.s3 = S3Server(self.work_dir / "s3", check_credentials=check_credentials)
        self.image = ZotStandinImage(self.work_dir / "image")

    @property
    def servers(self) -> dict[str, Any]:
        return {
            "apt-proxy": self.apt,
            "image-registry": self.registry,
            "caddy-releases": self.caddy,
            "s3": self.s3,
        }

    @property
    def state_path(self) -> Path:
        return self.work_dir / "stack.json"

    def start(self) -> StandinStack:
        """Build the zot stand-in image, start every server and push the image's tags."""
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            for version in DEFAULT_VERSIONS:
                self.image.build(version)
            for server in self.servers.values():
                server.start()
            self.push_zot(DEFAULT_VERSIONS[0])
        except BaseException:
            self.stop()
            raise
        self._save()
        return self

    def push_zot(self, version: str, tag: str = ZOT_TAG) -> str:
        """Push the stand-in image VERSION under TAG, e.g. to exercise podman auto-update."""
        source = self.image.storage_reference(self.image.local_reference(version))
        return self.registry.push(source, tag)

    def stop(self, remove_image: bool = True) -> None:
        """Stop every server; with REMOVE_IMAGE also delete the image storage and its mounts."""
        for server in self.servers.values():
            with contextlib.suppress(SandboxError):
                server.stop()
        if remove_image:
            with contextlib.suppress(SandboxError):
                self.image.remove_storage()
        self.state_path.unlink(missing_ok=True)

    def __enter__(self) -> StandinStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def expose_map(self) -> dict[int, int]:
        """Map each stand-in's guest port to its port on this machine."""
        return {GUEST_PORTS[name]: server.require_port() for name, server in self.servers.items()}

    def settings_overrides(self) -> dict[str, Any]:
        """Return dotted settings keys that point a deployment at the stand-ins, as seen in the guest."""
        overrides: dict[str, Any] = dict(SANDBOX_SETTINGS)
        overrides.update(self.apt.settings_overrides(GUEST_PORTS["apt-proxy"]))
        overrides.update(self.caddy.settings_overrides(GUEST_PORTS["caddy-releases"]))
        overrides.update(self.registry.settings_overrides(ZOT_TAG, GUEST_PORTS["image-registry"]))
        overrides.update(self.s3.settings_overrides(GUEST_PORTS["s3"]))
        overrides["caddy.version"] = self.caddy.versions[0] if self.caddy.versions else "latest"
        return overrides

    def settings_tree(self) -> dict[str, Any]:
        """Return the overrides as a nested mapping, ready to merge into `deployment`."""
        tree: dict[str, Any] = {}
        for dotted, value in self.settings_overrides().items():
            target = tree
            *parents, last = dotted.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = value
        return tree

    def secret_environment(self) -> dict[str, Secret]:
        return self.s3.secret_environment()

    def _save(self) -> None:
        data = {"expose": self.expose_map(), "settings": self.settings_tree()}
        self.state_path.write_text(json.dumps(data, indent=2) + "\n")


def running_stack_exposures(work_dir: Path = DEFAULT_WORK_DIR) -> dict[int, int]:
    """Return the guest-to-host port map of a stack started by another process, or {}."""
    path = Path(work_dir) / "stack.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {int(guest): int(host) for guest, host in data.get("expose", {}).items()}
