"""Open SSH connections to a deployment's servers with pinned host keys.

The servers come from `.zot-hetzner/<name>/servers.json`, written by deploy,
or from `--host`. Host keys are pinned in `.zot-hetzner/<name>/known_hosts`
(mode 0600): the first contact records the key and every later contact must
present the same one. The user's ~/.ssh/known_hosts and ~/.ssh/config are
never read or written, so a stale entry there cannot redirect or block us.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fabric
import paramiko

from .. import state
from ..errors import ConfigError, OpsError, RemoteError

KNOWN_HOSTS_FILE = "known_hosts"
# Seconds to wait for the TCP connection and the SSH handshake.
CONNECT_TIMEOUT = 15
# Seconds between SSH keepalive messages, so idle NAT entries and firewalls
# do not drop a session while a long command (a download, a restart) runs.
KEEPALIVE_INTERVAL = 15

# Pins from parallel connections are written one at a time.
_PIN_LOCK = threading.Lock()


class HostKeyMismatchError(OpsError):
    """A server presented a host key that differs from the pinned one."""


class UnreachableError(RemoteError):
    """No SSH session could be opened to a server (refused, timed out, reset)."""


@dataclass(frozen=True)
class Target:
    """One server to connect to: a display name, an address and the SSH port."""

    name: str
    address: str
    port: int

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH and paramiko file the key under: `host` or `[host]:port`."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def parse_hosts(value: str, default_port: int) -> list[Target]:
    """Parse `--host` text: comma-separated `host`, `host:port` or `[v6 address]:port`."""
    targets = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, port = item, default_port
        if item.startswith("["):
            end = item.find("]")
            if end == -1:
                raise ConfigError(f"--host {item!r} opens '[' without ']'; write [address]:port")
            host, rest = item[1:end], item[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ConfigError(f"--host {item!r}: expected ':port' after ']'")
                port = _port(rest[1:], item)
        elif item.count(":") == 1:
            host, port_text = item.split(":")
            port = _port(port_text, item)
        if not host or any(ch.isspace() or ch in "/@" for ch in host):
            raise ConfigError(f"--host {item!r} is not a host name or address")
        targets.append(Target(name=host, address=host, port=port))
    if not targets:
        raise ConfigError("--host is empty; give one or more host[:port], comma-separated")
    return targets


def _port(text: str, item: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"--host {item!r} has an invalid port; use 1 to 65535")
    return int(text)


def load_targets(deployment: str, port: int) -> list[Target]:
    """Return the servers deploy recorded for DEPLOYMENT in servers.json."""
    path = state.deployment_dir(deployment, create=False) / "servers.json"
    try:
        servers = state.read_servers(deployment)
    except (ValueError, AttributeError) as error:
        raise ConfigError(
            f"{path} is not valid ({error}); fix it or name servers with --host"
        ) from None
    if not servers:
        raise ConfigError(
            f"no servers recorded in {path}; run deploy first or name servers with --host"
        )
    targets = []
    for number, server in enumerate(servers, start=1):
        if not isinstance(server, dict):
            raise ConfigError(f"{path}: server {number} is not an object")
        # ssh_host and ssh_port are recorded when SSH goes another way than the
        # server's public address (a local test host behind a loopback forwarder).
        address = server.get("ssh_host") or server.get("ipv4") or server.get("ipv6")
        if not address:
            raise ConfigError(f"{path}: server {number} has neither ipv4 nor ipv6")
        server_port = int(server.get("ssh_port") or port)
        name = str(server.get("name") or address)
        targets.append(Target(name=name, address=address, port=server_port))
    return targets


def select_targets(deployment: str, ssh_port: int, hosts: str | None) -> list[Target]:
    """Return the servers named by HOSTS, or else those recorded for DEPLOYMENT."""
    if hosts:
        return parse_hosts(hosts, ssh_port)
    return load_targets(deployment, ssh_port)


def fingerprint(key: paramiko.PKey) -> str:
    """Return OpenSSH's SHA256 fingerprint of KEY, as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def reset_pin_command(known_hosts: Path, target: Target) -> str:
    return (
        f"ssh-keygen -R {shlex.quote(target.known_hosts_name)} -f {shlex.quote(str(known_hosts))}"
    )


class PinOnFirstContact(paramiko.MissingHostKeyPolicy):
    """Record a server's key in the toolkit's known_hosts the first time we see it."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        with _PIN_LOCK:
            keys = paramiko.HostKeys()
            if self.known_hosts.exists():
                keys.load(str(self.known_hosts))
            known = keys.lookup(hostname)
            if known is not None and known.get(key.get_name()) != key:
                # Another connection pinned a different key for this name meanwhile.
                pinned = known.get(key.get_name()) or next(iter(known.values()))
                raise paramiko.BadHostKeyException(hostname, key, pinned)
            keys.add(hostname, key.get_name(), key)
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = self.known_hosts.with_name(f".{self.known_hosts.name}.{os.getpid()}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(descriptor)
            os.chmod(temporary, 0o600)
            keys.save(str(temporary))
            os.replace(temporary, self.known_hosts)
        client.get_host_keys().add(hostname, key.get_name(), key)


class PinnedConnection(fabric.Connection):
    """A Fabric connection that turns SSH failures into toolkit errors and keeps the session alive."""

    def __init__(self, target: Target, known_hosts: Path, keepalive: int, **kwargs: Any) -> None:
        super().__init__(host=target.address, port=target.port, **kwargs)
        self.target = target
        self.known_hosts = known_hosts
        self.keepalive = keepalive
        self.client.set_missing_host_key_policy(PinOnFirstContact(known_hosts))
        if known_hosts.exists():
            self.client.get_host_keys().load(str(known_hosts))

    def open(self) -> Any:
        if self.is_connected:
            return None
        where = f"{self.user}@{self.target.address}:{self.target.port}"
        # A session that broke leaves Fabric's cached SFTP client dead; drop it
        # so the reopened connection starts a new one.
        self._sftp = None
        try:
            result = super().open()
        except paramiko.BadHostKeyException as error:
            self.client.close()
            raise HostKeyMismatchError(
                f"host key of {self.target.name} ({self.target.known_hosts_name}) changed: "
                f"pinned {fingerprint(error.expected_key)}, presented "
                f"{fingerprint(error.key)}. If the server was rebuilt, reset the pin with: "
                f"{reset_pin_command(self.known_hosts, self.target)}; otherwise do not connect"
            ) from None
        except paramiko.AuthenticationException as error:
            self.client.close()
            raise RemoteError(
                f"SSH login to {where} was rejected ({error}); check deployment.ssh.user and "
                "deployment.ssh.private_key"
            ) from None
        except TimeoutError:
            self.client.close()
            raise UnreachableError(
                f"SSH connection to {where} timed out after {self.connect_timeout} s; check "
                "that the server runs and that the firewall admits your address"
            ) from None
        except (OSError, paramiko.SSHException) as error:
            self.client.close()
            raise UnreachableError(f"SSH connection to {where} failed: {error}") from None
        self.transport.set_keepalive(self.keepalive)
        return result


def connect(
    target: Target,
    *,
    user: str,
    private_key: Path | None,
    known_hosts: Path,
    connect_timeout: int = CONNECT_TIMEOUT,
    keepalive: int = KEEPALIVE_INTERVAL,
    allow_agent: bool = True,
) -> PinnedConnection:
    """Build (not yet open) a connection to TARGET; it opens on first use."""
    # An explicit, empty SSHConfig keeps Fabric from reading ~/.ssh/config
    # and /etc/ssh/ssh_config; lazy=True skips Invoke's config files.
    config = fabric.Config(ssh_config=paramiko.SSHConfig(), lazy=True)
    connect_kwargs: dict[str, Any] = {"look_for_keys": False, "allow_agent": allow_agent}
    if private_key is not None:
        connect_kwargs["key_filename"] = [str(Path(private_key).expanduser())]
    return PinnedConnection(
        target,
        known_hosts,
        keepalive,
        user=user,
        config=config,
        connect_timeout=connect_timeout,
        connect_kwargs=connect_kwargs,
    )


def connect_for(settings: Any, target: Target) -> PinnedConnection:
    """Build a connection to TARGET with the user, key and pin file of SETTINGS."""
    return connect(
        target,
        user=settings.ssh.user,
        private_key=settings.ssh.private_key,
        known_hosts=state.deployment_dir(settings.name) / KNOWN_HOSTS_FILE,
    )
