"""The "local" deploy provider: a sandbox host on this machine instead of a Hetzner server.

The host boots from the same deploy-mode user data a Hetzner server gets and
is then converged over SSH by the same code. Its SSH, HTTP and HTTPS ports
are reached through forwarders on this machine's 127.0.0.1. When a stand-in
stack runs (`inv sandbox.standins-up`), its servers are exposed inside the
host before it boots, so cloud-init already finds the apt proxy.
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..converge import ServerRecord
from ..errors import ConfigError
from ..progress import Progress
from . import host as sandbox_host
from .standins.stack import DEFAULT_WORK_DIR, running_stack_exposures

FORWARDS = (22, 80, 443)


def host_name(settings: Settings) -> str:
    return f"zh-{settings.name}"[:32]


def _record(settings: Settings, host: sandbox_host.SandboxHost, created: bool) -> ServerRecord:
    return ServerRecord(
        name=host.name,
        ipv4=None,
        ipv6=None,
        ssh_host="127.0.0.1",
        ssh_port=host.ssh_port,
        created=created,
        id=host.name,
        https_endpoint=("127.0.0.1", host.port(443)),
        extra={"provider": "local"},
    )


def provision(
    settings: Settings,
    user_data: str,
    progress: Progress,
    dry_run: bool,
    *,
    expose: dict[int, int] | None = None,
    standins_dir: Any = DEFAULT_WORK_DIR,
) -> tuple[ServerRecord | None, list[str]]:
    """Boot the deployment's sandbox host unless it already runs; return it as a server record."""
    if settings.tls != "internal":
        raise ConfigError(
            "deployment.tls = 'acme' cannot work on a local host, which no ACME server can "
            "reach; set deployment.tls: internal (inv sandbox.standins-up prints the settings)"
        )
    if settings.ssh.private_key is None or not settings.ssh.private_key.exists():
        raise ConfigError(
            f"deployment.ssh.private_key {settings.ssh.private_key} does not exist; the "
            "local provider logs in with it"
        )
    name = host_name(settings)
    existing = {host.name: host for host in sandbox_host.list_hosts()}
    host = existing.get(name)
    if host is not None and host.status != "running":
        raise ConfigError(
            f"sandbox host {name} exists but is {host.status}; remove it with "
            f"inv sandbox.down {name} (or inv destroy --provider local), then deploy again"
        )
    lines = [f'local plan for deployment "{settings.name}":']
    lines.append(f"  host      {'exists' if host else 'create'}   {name}")
    for line in lines:
        progress.line(line)
    if dry_run:
        return None, lines
    if host is not None:
        return _record(settings, host, created=False), lines

    exposures = dict(running_stack_exposures(standins_dir))
    exposures.update(expose or {})
    progress.stage(f"booting sandbox host {name}")
    host = sandbox_host.boot(
        name,
        user_data,
        forwards=FORWARDS,
        ssh_key=settings.ssh.private_key,
        expose=exposures,
    )
    progress.done(f"running; SSH on 127.0.0.1:{host.ssh_port}, HTTPS on 127.0.0.1:{host.port(443)}")
    return _record(settings, host, created=True), lines


def destroy(settings: Settings) -> list[str]:
    name = host_name(settings)
    if name not in {host.name for host in sandbox_host.list_hosts()}:
        return [f"no sandbox host {name}"]
    sandbox_host.down(name)
    return [f"removed sandbox host {name}"]
