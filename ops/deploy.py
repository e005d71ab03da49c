"""`inv deploy` and `inv destroy`: from a configuration to a registry that answers over HTTPS.

deploy renders the user data in deploy mode (no secrets), makes sure the
server exists (Hetzner Cloud through the API, or a local sandbox host),
records it in the local state, and converges it over SSH. Every stage
checks before it acts, so an interrupted deploy converges when run again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from . import caddy, passwords, state
from .config import Settings
from .converge import ConvergeResult, ServerRecord, Timeouts, converge
from .errors import ConfigError
from .progress import Progress
from .render import render_user_data
from .secrets import HCLOUD_TOKEN, SecretSource

Provider = Literal["hetzner", "local"]
PROVIDERS = ("hetzner", "local")
# Another API base URL, e.g. for a recording proxy or a local fake in tests.
API_ENDPOINT_VARIABLE = "ZOT_HETZNER_API_ENDPOINT"
# (server address, port) -> (host, port) reached from here.
EndpointMap = Callable[[str, int], tuple[str, int]]


@dataclass
class DeployOutcome:
    record: ServerRecord | None
    plan_lines: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    generated: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    registry_url: str = ""


def record_server(settings: Settings, record: ServerRecord) -> None:
    """Remember the server in .zot-hetzner/<name>/servers.json for the day-two tasks."""
    servers = [s for s in state.read_servers(settings.name) if s.get("name") != record.name]
    servers.append(record.as_state())
    state.write_servers(settings.name, servers)


def hetzner_client(source: SecretSource, endpoint: str | None = None, **options: Any):
    from .hetzner import DEFAULT_ENDPOINT, make_client

    token = source.require(HCLOUD_TOKEN, "deploy and destroy call the Hetzner Cloud API")
    endpoint = endpoint or os.environ.get(API_ENDPOINT_VARIABLE) or DEFAULT_ENDPOINT
    return make_client(token, endpoint=endpoint, **options)


def provision_hetzner(
    settings: Settings,
    user_data: str,
    client: Any,
    progress: Progress,
    dry_run: bool,
    endpoint_map: EndpointMap | None = None,
) -> tuple[ServerRecord | None, list[str]]:
    """Create what is missing on Hetzner Cloud; return the server and the plan's lines.

    ENDPOINT_MAP turns (server address, port) into where that port is reached
    from here; only tests, whose servers sit behind loopback forwarders, need it.
    """
    from . import hetzner, provision

    progress.stage("reading the Hetzner Cloud project")
    plan = hetzner.plan(settings, client)
    lines = plan.lines()
    for line in lines:
        progress.line(line)
    plan.raise_for_problems()
    if dry_run:
        return None, lines
    if plan.changes:
        progress.stage("creating: " + "; ".join(plan.changes))
    result = provision.apply(plan, user_data, client)
    for line in result.lines():
        progress.line(line)
    address = result.ipv4 or result.ipv6
    if address is None:
        raise ConfigError(f"{result.server} has no public address; it cannot be reached over SSH")
    ssh_host, ssh_port = (
        endpoint_map(address, settings.ssh.port) if endpoint_map else (address, settings.ssh.port)
    )
    record = ServerRecord(
        name=str(result.server.name),
        id=result.server.id,
        ipv4=result.ipv4,
        ipv6=result.ipv6,
        ssh_host=ssh_host,
        ssh_port=ssh_port,
        created=any(resource.kind == "server" for resource in result.created),
        https_endpoint=endpoint_map(address, 443) if endpoint_map else None,
    )
    return record, lines


def provision_local(
    settings: Settings, user_data: str, progress: Progress, dry_run: bool, **options: Any
):
    from .sandbox import local_provider

    return local_provider.provision(settings, user_data, progress, dry_run, **options)


def deploy(
    settings: Settings,
    *,
    provider: Provider = "hetzner",
    dry_run: bool = False,
    source: SecretSource | None = None,
    progress: Progress | None = None,
    timeouts: Timeouts | None = None,
    check_dns: bool = True,
    client: Any = None,
    endpoint_map: EndpointMap | None = None,
    local_options: dict[str, Any] | None = None,
) -> DeployOutcome:
    """Deploy the registry described by SETTINGS; see the module docstring."""
    if provider not in PROVIDERS:
        raise ConfigError(f"--provider {provider!r} is not valid; use hetzner or local")
    source = source or SecretSource.load()
    progress = progress or Progress()

    # Everything that can fail on bad input fails here, before any request.
    secrets, password_set = passwords.load_deployment_secrets(settings, source)
    version = caddy.resolve_version(settings)
    user_data = render_user_data(settings, None, "deploy", version)
    if provider == "hetzner" and client is None:
        client = hetzner_client(source)

    if provider == "hetzner":
        record, plan_lines = provision_hetzner(
            settings, user_data, client, progress, dry_run, endpoint_map
        )
    else:
        record, plan_lines = provision_local(
            settings, user_data, progress, dry_run, **(local_options or {})
        )
    outcome = DeployOutcome(record=record, plan_lines=plan_lines, dry_run=dry_run)
    if dry_run or record is None:
        return outcome

    # From here on the server exists: keep its record and the passwords it
    # will get, so a run that fails later can be resumed and logged into.
    record_server(settings, record)
    password_set.save()
    outcome.generated = {user: str(path) for user, path in password_set.generated.items()}
    result: ConvergeResult = converge(
        settings,
        record,
        secrets,
        password_set.passwords,
        progress,
        timeouts=timeouts,
        check_dns=check_dns,
    )
    outcome.changes = ([f"created server {record.name}"] if record.created else []) + result.changes
    outcome.registry_url = result.registry_url
    return outcome


def destroy(
    settings: Settings,
    *,
    provider: Provider = "hetzner",
    remove_firewall: bool = False,
    source: SecretSource | None = None,
    client: Any = None,
) -> list[str]:
    """Remove the deployment's server (and, on request, its firewall); never the bucket."""
    if provider == "local":
        from .sandbox import local_provider

        lines = local_provider.destroy(settings)
    else:
        from . import hetzner

        client = client or hetzner_client(source or SecretSource.load())
        lines = hetzner.destroy(settings, client, remove_firewall).lines()
    state.write_servers(settings.name, [])
    lines.append(
        f"the bucket {settings.storage.bucket} and its images were not touched; "
        f"the local state in {state.deployment_dir(settings.name, create=False)} is kept"
    )
    return lines
