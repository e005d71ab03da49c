"""A plain image registry on 127.0.0.1 that sandbox hosts pull the zot stand-in from.

It is Debian's docker-registry (distribution 2.8) run as our own process with
a config file and filesystem storage under the work directory, without auth
and without TLS, so podman in the guest must list it as an insecure registry.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .process import LOOPBACK, StandinError, StandinProcess, http_status, run_tool

REGISTRY_BINARY = "docker-registry"


class LocalRegistry(StandinProcess):
    """An OCI distribution registry on 127.0.0.1 with a skopeo push helper."""

    name = "image-registry"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "registry.json"

    @property
    def storage_dir(self) -> Path:
        return self.work_dir / "storage"

    def address(self, guest_port: int | None = None) -> str:
        return f"{LOOPBACK}:{guest_port or self.require_port()}"

    def image_reference(self, repository_tag: str, guest_port: int | None = None) -> str:
        """Return the fully qualified reference of `repository_tag` ("repo/name:tag") here."""
        return f"{self.address(guest_port)}/{repository_tag}"

    def settings_overrides(
        self, repository_tag: str, guest_port: int | None = None
    ) -> dict[str, object]:
        """Return settings fields that make a deployment pull `repository_tag` from here."""
        return {
            "zot.image": self.image_reference(repository_tag, guest_port),
            "zot.insecure_registries": [self.address(guest_port)],
        }

    # --- process ------------------------------------------------------------------------

    def prepare(self) -> None:
        # distribution reads YAML, and JSON is valid YAML.
        config = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.address(), "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def command(self) -> list[str]:
        binary = shutil.which(REGISTRY_BINARY)
        if binary is None:
            raise StandinError(
                f"{REGISTRY_BINARY} not found: install package docker-registry "
                "(scripts/install-host-packages.sh)"
            )
        return [binary, "serve", str(self.config_path)]

    def probe(self) -> bool:
        return http_status(f"{self.url}/v2/") == 200

    # --- images -------------------------------------------------------------------------

    def push(self, source: str, repository_tag: str) -> str:
        """Copy image `source` (a skopeo transport reference) to `repository_tag` here.

        Returns the pushed reference, e.g. 127.0.0.1:PORT/project-zot/zot-standin:v1.
        """
        destination = self.image_reference(repository_tag)
        run_tool(
            f"push {repository_tag} to the local registry",
            ["skopeo", "copy", "--dest-tls-verify=false", source, f"docker://{destination}"],
        )
        return destination

    def inspect(self, repository_tag: str) -> dict:
        """Return `skopeo inspect` of `repository_tag` as served by this registry."""
        output = run_tool(
            f"inspect {repository_tag} in the local registry",
            [
                "skopeo",
                "inspect",
                "--tls-verify=false",
                f"docker://{self.image_reference(repository_tag)}",
            ],
        ).stdout
        return json.loads(output)
