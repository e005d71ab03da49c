"""A real registry client (podman login, skopeo copy) talking to a sandbox host's Caddy.

The client runs on this machine and reaches the guest's port 443 through its
loopback forwarder. Caddy routes by host name and serves a certificate for
the deployment's domain, so each client command runs in a mount namespace
of its own where /etc/hosts maps that domain to 127.0.0.1: the request then
carries the right SNI and Host header, and TLS is verified against Caddy's
internal CA. Nothing outside that one process sees the changed hosts file.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

TIMEOUT = 300


class RegistryClient:
    def __init__(self, domain: str, port: int, ca_pem: str, work_dir: Path) -> None:
        self.domain = domain
        self.port = port
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.cert_dir = self.work_dir / "certs"
        self.cert_dir.mkdir(exist_ok=True)
        (self.cert_dir / "caddy-local-ca.crt").write_text(ca_pem)
        self.hosts_file = self.work_dir / "hosts"
        self.hosts_file.write_text(f"127.0.0.1 localhost {domain}\n::1 localhost\n")
        self.auth_file = self.work_dir / "auth.json"

    @property
    def registry(self) -> str:
        return f"{self.domain}:{self.port}"

    def _run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        inner = f"mount --bind {shlex.quote(str(self.hosts_file))} /etc/hosts && exec {shlex.join(argv)}"
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": str(self.work_dir),
                "LANG": "C.UTF-8",
            },
        )

    def login(self, user: str, password: str) -> subprocess.CompletedProcess:
        """`podman login` with the password on stdin, never in argv."""
        self.auth_file.unlink(missing_ok=True)
        return self._run(
            [
                "podman",
                "login",
                "--authfile",
                str(self.auth_file),
                "--cert-dir",
                str(self.cert_dir),
                "--username",
                user,
                "--password-stdin",
                self.registry,
            ],
            stdin=password + "\n",
        )

    def push(self, source: str, repository_tag: str) -> subprocess.CompletedProcess:
        return self._run(
            [
                "skopeo",
                "copy",
                "--authfile",
                str(self.auth_file),
                "--dest-cert-dir",
                str(self.cert_dir),
                source,
                f"docker://{self.registry}/{repository_tag}",
            ]
        )

    def pull(self, repository_tag: str, destination: Path) -> subprocess.CompletedProcess:
        return self._run(
            [
                "skopeo",
                "copy",
                "--authfile",
                str(self.auth_file),
                "--src-cert-dir",
                str(self.cert_dir),
                f"docker://{self.registry}/{repository_tag}",
                f"oci:{destination}:latest",
            ]
        )

    def inspect_digest(self, repository_tag: str) -> str:
        result = self._run(
            [
                "skopeo",
                "inspect",
                "--authfile",
                str(self.auth_file),
                "--cert-dir",
                str(self.cert_dir),
                "--format",
                "{{.Digest}}",
                f"docker://{self.registry}/{repository_tag}",
            ]
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()
