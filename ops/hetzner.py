"""Hetzner Cloud resources of a deployment: the API client, errors, plan, destroy.

A deployment owns one server, one firewall (`<name>-fw`) and, when the
operator's key is not in the project yet, one SSH key (`<name>-key`). Every
resource that the toolkit creates carries the labels
`zot-hetzner/deployment=<name>` and `zot-hetzner/managed-by=zot-hetzner`,
and destroy() removes only resources that carry both.

plan() only reads. ops.provision.apply() carries a plan out.

All calls go through hcloud-python, which retries 502/504 replies and the
error codes `conflict`, `rate_limit_exceeded` and `timeout` on its own, with
exponential backoff (up to 5 retries in hcloud-python 2.27). The errors that
remain are turned into one-line OpsError messages here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from hcloud import APIException, Client
from hcloud.actions import ActionFailedException, ActionTimeoutException, BoundAction
from hcloud.firewalls import BoundFirewall, FirewallRule
from hcloud.images import BoundImage
from hcloud.locations import BoundLocation
from hcloud.server_types import BoundServerType
from hcloud.servers import BoundServer
from hcloud.ssh_keys import BoundSSHKey

from . import __version__
from .config import Settings
from .errors import ConfigError, OpsError
from .secrets import Secret

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
LABEL_DEPLOYMENT = "zot-hetzner/deployment"
LABEL_MANAGED_BY = "zot-hetzner/managed-by"
MANAGED_BY = "zot-hetzner"
# Marks what one apply() run created, so a rollback finds a resource even
# when the reply to its create request was lost.
LABEL_RUN = "zot-hetzner/run"
ANYWHERE = ("0.0.0.0/0", "::/0")

# Messages, not secrets: ruff's S105 flags the word TOKEN in their names.
TOKEN_REJECTED = "HCLOUD_TOKEN was rejected by the API (401); create a read/write token in the Hetzner Console under Security > API tokens"  # noqa: S105
TOKEN_READ_ONLY = "HCLOUD_TOKEN is read-only (401 token_readonly); create a read/write token in the Hetzner Console under Security > API tokens"  # noqa: S105


class HetznerError(OpsError):
    """A Hetzner Cloud API request or action failed; `code` is the API's error code."""

    def __init__(self, message: str, code: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ServerTypeUnavailableError(HetznerError):
    """The server type cannot be ordered in the location now; the message lists alternatives."""


# ---------------------------------------------------------------------------
# Client and names


def make_client(
    token: Secret,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    poll_interval: float = 2.0,
    wait_timeout: float = 600.0,
    poll_max_retries: int | None = None,
    request_timeout: float | tuple[float, float] = (10.0, 60.0),
) -> Client:
    """Return an hcloud Client for TOKEN.

    An action wait polls every POLL_INTERVAL seconds, at most POLL_MAX_RETRIES
    times; by default that count is WAIT_TIMEOUT / POLL_INTERVAL, so a wait
    ends after about WAIT_TIMEOUT seconds. With POLL_INTERVAL 0 (tests), pass
    POLL_MAX_RETRIES.
    """
    if poll_max_retries is None:
        if poll_interval <= 0:
            raise ValueError("poll_max_retries is required when poll_interval is 0")
        poll_max_retries = max(1, math.ceil(wait_timeout / poll_interval))
    return Client(
        token=token.reveal(),
        api_endpoint=endpoint,
        application_name="zot-hetzner",
        application_version=__version__,
        poll_interval=poll_interval,
        poll_max_retries=poll_max_retries,
        timeout=request_timeout,
    )


def deployment_labels(name: str) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: name, LABEL_MANAGED_BY: MANAGED_BY}


def deployment_selector(name: str) -> str:
    """Return the label selector that matches the resources the toolkit made for NAME."""
    return f"{LABEL_DEPLOYMENT}={name},{LABEL_MANAGED_BY}={MANAGED_BY}"


def is_managed(labels: dict[str, str] | None, name: str) -> bool:
    labels = labels or {}
    return labels.get(LABEL_DEPLOYMENT) == name and labels.get(LABEL_MANAGED_BY) == MANAGED_BY


def firewall_name(name: str) -> str:
    return f"{name}-fw"


def ssh_key_name(name: str) -> str:
    return f"{name}-key"


def read_public_key(path: Path) -> str:
    """Return the first key line of the OpenSSH public key file at PATH."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read deployment.ssh.public_key {path}: {exc.strerror}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"deployment.ssh.public_key {path} is empty")
    return lines[0]


def ssh_fingerprint(public_key: str) -> str:
    """Return the MD5 fingerprint of an OpenSSH public key line, as the API shows it.

    Hetzner lists SSH keys by the MD5 digest of the decoded key blob, written
    as colon-separated hex pairs (the form of `ssh-keygen -l -E md5`).
    """
    fields = public_key.split()
    if len(fields) < 2:
        raise ConfigError(
            "the SSH public key is not in OpenSSH format ('<type> <base64> [comment]')"
        )
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except binascii.Error:
        raise ConfigError("the SSH public key's key data is not valid base64") from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def firewall_rules(allowed_cidrs: Iterable[str], ssh_port: int = 22) -> list[FirewallRule]:
    """Return the inbound rules: SSH from ALLOWED_CIDRS, HTTP, HTTPS and ICMP from anywhere.

    Port 22 stays open (to ALLOWED_CIDRS only) beside a different SSH_PORT,
    because a fresh server's sshd listens on 22 until the bootstrap moves it.
    Outbound traffic has no rules, which Hetzner's firewalls treat as allowed.
    """
    sources = [str(ipaddress.ip_network(cidr, strict=False)) for cidr in allowed_cidrs]
    ssh_ports = sorted({22, ssh_port})
    rules = [
        FirewallRule(
            direction="in", protocol="tcp", port=str(port), source_ips=sources, description="SSH"
        )
        for port in ssh_ports
    ]
    rules += [
        FirewallRule(
            direction="in",
            protocol="tcp",
            port="80",
            source_ips=list(ANYWHERE),
            description="HTTP (ACME challenges, redirect)",
        ),
        FirewallRule(
            direction="in",
            protocol="tcp",
            port="443",
            source_ips=list(ANYWHERE),
            description="HTTPS",
        ),
        FirewallRule(
            direction="in", protocol="icmp", source_ips=list(ANYWHERE), description="ICMP"
        ),
    ]
    return rules


def _rule_key(rule: FirewallRule) -> tuple[Any, ...]:
    def networks(values: Iterable[str] | None) -> frozenset[str]:
        return frozenset(str(ipaddress.ip_network(v, strict=False)) for v in values or ())

    return (
        rule.direction,
        rule.protocol,
        rule.port,
        networks(rule.source_ips),
        networks(rule.destination_ips),
    )


def rules_match(current: Iterable[FirewallRule], wanted: Iterable[FirewallRule]) -> bool:
    """Return whether two rule lists allow the same traffic; descriptions are ignored."""
    return sorted(map(_rule_key, current), key=repr) == sorted(map(_rule_key, wanted), key=repr)


def describe_rules(rules: Iterable[FirewallRule]) -> str:
    parts = []
    for rule in rules:
        what = f"{rule.port}/{rule.protocol}" if rule.port else rule.protocol
        sources = sorted(rule.source_ips or [])
        origin = "anywhere" if sorted(ANYWHERE) == sources else ", ".join(sources)
        parts.append(f"{what} from {origin}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Resource:
    """A Hetzner Cloud resource named in results and error messages."""

    kind: str  # "server", "firewall" or "ssh-key", as in the hcloud CLI
    id: int
    name: str

    def __str__(self) -> str:
        return f'{self.kind} "{self.name}" (id {self.id})'

    @property
    def delete_command(self) -> str:
        """The hcloud CLI command that deletes this resource."""
        return f"hcloud {self.kind} delete {self.id}"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _field_names(details: Any) -> set[str]:
    if not isinstance(details, dict):
        return set()
    return {f.get("name") for f in details.get("fields") or [] if isinstance(f, dict)}


def translate_error(error: Exception, doing: str, *, endpoint: str | None = None) -> OpsError:
    """Turn an hcloud or requests exception raised while DOING into a one-line OpsError."""
    if isinstance(error, APIException):
        return _translate_api_exception(error, doing)
    if isinstance(error, ActionTimeoutException):
        action = error.action
        return HetznerError(
            f"timed out while {doing}: action {action.command} (id {action.id}) was still "
            "running when the wait limit ran out; check it in the Hetzner Console and run the "
            "command again",
            code="action_timeout",
        )
    if isinstance(error, ActionFailedException):
        action = error.action
        code = (action.error or {}).get("code", "action_failed")
        message = _one_line((action.error or {}).get("message", "no message"))
        return HetznerError(
            f"{doing} failed: action {action.command} (id {action.id}) ended with {code}: {message}",
            code=code,
        )
    if isinstance(error, requests.exceptions.Timeout):
        where = endpoint or "the Hetzner Cloud API"
        return HetznerError(
            f"timed out while {doing}: no reply from {where} in time "
            f"({type(error).__name__}); run the command again",
            code="timeout",
        )
    if isinstance(error, requests.exceptions.RequestException):
        where = endpoint or "the Hetzner Cloud API"
        return HetznerError(
            f"cannot reach {where} while {doing} ({type(error).__name__}); check the network "
            "connection and run the command again",
            code="connection",
        )
    return HetznerError(f"{doing} failed: {type(error).__name__}: {_one_line(error)}")


def _translate_api_exception(error: APIException, doing: str) -> OpsError:
    code, message = error.code, _one_line(error.message)
    if code == "unauthorized":
        return ConfigError(TOKEN_REJECTED)
    if code == "token_readonly":
        return ConfigError(TOKEN_READ_ONLY)
    if code == "rate_limit_exceeded":
        return HetznerError(
            f"the Hetzner Cloud API rate limit was exceeded (429) while {doing}, and "
            "hcloud-python's retries with backoff did not get through; the limit (3600 "
            "requests per hour per project by default) recovers by one request per second: "
            "wait a few minutes and run the command again",
            code=code,
        )
    if code == "invalid_input" and "user_data" in _field_names(error.details):
        return HetznerError(
            f"{doing} failed: the API rejected the user data ({message}); it accepts at most "
            "32 KiB: render in deploy mode, which leaves the secret files out",
            code=code,
        )
    if code == "uniqueness_error":
        return HetznerError(
            f"{doing} failed: the name is already taken in this Hetzner Cloud project "
            f"(409 uniqueness_error: {message}); delete or rename the other resource in the "
            "Hetzner Console, or set deployment.name to another name",
            code=code,
        )
    if code == "resource_in_use":
        return HetznerError(
            f"{doing} failed: it is still in use (422 resource_in_use: {message}); remove it "
            "from the other servers in the Hetzner Console first",
            code=code,
        )
    if code == "resource_limit_exceeded":
        return HetznerError(
            f"{doing} failed: the project reached a resource limit (403: {message}); ask "
            "Hetzner for a higher limit in the Console or remove unused resources",
            code=code,
        )
    if code == "forbidden":
        return HetznerError(
            f"{doing} failed: the token may not do this (403 forbidden: {message}); use a "
            "read/write token of the right project",
            code=code,
        )
    if isinstance(code, int):
        return HetznerError(f"{doing} failed: HTTP {code} {message} from the API", code=code)
    return HetznerError(f"{doing} failed: {message} ({code})", code=code)


def endpoint_of(client: Client) -> str | None:
    """Return the API base URL of CLIENT (hcloud-python 2.27 has no public accessor)."""
    return getattr(getattr(client, "_client", None), "_endpoint", None)


@contextmanager
def api_errors(doing: str, client: Client | None = None) -> Iterator[None]:
    """Translate hcloud and requests exceptions raised in the block into OpsError."""
    try:
        yield
    except (
        APIException,
        ActionFailedException,
        ActionTimeoutException,
        requests.exceptions.RequestException,
    ) as exc:
        endpoint = endpoint_of(client) if client is not None else None
        raise translate_error(exc, doing, endpoint=endpoint) from exc


def wait_for(actions: Iterable[BoundAction | None]) -> None:
    """Wait until each action finishes, bounded by the client's poll limits.

    Raises ActionFailedException or ActionTimeoutException from hcloud.
    """
    for action in actions:
        if action is not None:
            action.wait_until_finished()


# ---------------------------------------------------------------------------
# Availability


def _type_location(server_type: BoundServerType, location: str) -> Any | None:
    for entry in server_type.locations or []:
        if entry.location.name == location:
            return entry
    return None


def _orderable(entry: Any) -> bool:
    # `available` comes with hcloud-python >= 2.18; None means the reply lacked the field.
    return entry is not None and entry.deprecation is None and entry.available is not False


def suggest_alternatives(
    client: Client, server_type: BoundServerType, location: str, limit: int = 3
) -> str:
    """Return a clause naming where SERVER_TYPE can be ordered and what else fits LOCATION.

    Alternative types have the same architecture and at least the same cores
    and memory; those with the same CPU type (shared or dedicated) come first.
    Returns "" if nothing qualifies or the catalogue cannot be read.
    """
    other_locations = [
        entry.location.name
        for entry in server_type.locations or []
        if entry.location.name != location and _orderable(entry)
    ]
    try:
        all_types = client.server_types.get_all()
    except (APIException, requests.exceptions.RequestException) as exc:
        log.warning("cannot list server types for suggestions: %s", _one_line(exc))
        all_types = []
    other_types = sorted(
        (
            candidate
            for candidate in all_types
            if candidate.name != server_type.name
            and candidate.architecture == server_type.architecture
            and (candidate.cores or 0) >= (server_type.cores or 0)
            and (candidate.memory or 0) >= (server_type.memory or 0)
            and _orderable(_type_location(candidate, location))
        ),
        key=lambda t: (t.cpu_type != server_type.cpu_type, t.cores, t.memory, t.name),
    )
    parts = []
    if other_locations:
        parts.append(f"{server_type.name} is available in {', '.join(other_locations[:limit])}")
    if other_types:
        names = ", ".join(t.name for t in other_types[:limit])
        parts.append(f"{location} offers {names}")
    if not parts:
        return ""
    return "; ".join(parts) + " (set deployment.server.location or deployment.server.type)"


def availability_problem(
    client: Client, server_type: BoundServerType, location: BoundLocation
) -> str | None:
    """Return why SERVER_TYPE cannot be ordered in LOCATION now, or None if it can."""
    entry = _type_location(server_type, location.name)
    if entry is None:
        offered = ", ".join(e.location.name for e in server_type.locations or []) or "no location"
        return (
            f"server type {server_type.name} is not offered in {location.name}; it is "
            f"offered in {offered} (set deployment.server.location or deployment.server.type)"
        )
    if entry.deprecation is not None:
        until = entry.deprecation.unavailable_after
        when = f"orderable until {until:%Y-%m-%d}" if until is not None else "deprecated"
        hint = suggest_alternatives(client, server_type, location.name)
        return f"server type {server_type.name} is deprecated in {location.name} ({when})" + (
            f"; {hint}" if hint else ""
        )
    if entry.available is False:
        hint = suggest_alternatives(client, server_type, location.name)
        return f"server type {server_type.name} is out of stock in {location.name}" + (
            f"; {hint}" if hint else ""
        )
    return None


# ---------------------------------------------------------------------------
# Plan


@dataclass(frozen=True)
class Difference:
    """A setting whose value on the existing server differs from the configuration."""

    setting: str
    current: str
    wanted: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.current} on the server, {self.wanted} in the settings"


@dataclass(frozen=True)
class Plan:
    """The project's resources for one deployment, compared with its settings.

    apply() makes the changes listed by `changes`. Each entry of `problems`
    blocks apply() and names the setting to change.
    """

    deployment: str
    labels: dict[str, str]
    public_key: str
    fingerprint: str
    ssh_key_name: str
    ssh_key: BoundSSHKey | None
    firewall_name: str
    rules: tuple[FirewallRule, ...]
    firewall: BoundFirewall | None
    firewall_rules_differ: bool
    server_name: str
    server_type: BoundServerType | None
    image: BoundImage | None
    location: BoundLocation | None
    server: BoundServer | None
    differences: tuple[Difference, ...] = ()
    firewall_applied: bool = False
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def changes(self) -> list[str]:
        """Describe each change apply() would make, in order; empty when nothing would change."""
        changes = []
        if self.ssh_key is None:
            changes.append(f'upload SSH key "{self.ssh_key_name}" ({self.fingerprint})')
        if self.firewall is None:
            changes.append(f'create firewall "{self.firewall_name}"')
        elif self.firewall_rules_differ:
            changes.append(f'set the rules of firewall "{self.firewall_name}"')
        if self.server is None:
            changes.append(f'create server "{self.server_name}"')
        elif not self.firewall_applied:
            changes.append(f'apply firewall "{self.firewall_name}" to server "{self.server_name}"')
        return changes

    def lines(self) -> list[str]:
        """Return the plan as lines for a terminal: what exists, what would change, what differs."""
        rows: list[tuple[str, str, str]] = []
        if self.ssh_key is not None:
            rows.append(
                (
                    "ssh key",
                    "exists",
                    f'"{self.ssh_key.name}" (id {self.ssh_key.id}), {self.fingerprint}',
                )
            )
        else:
            rows.append(("ssh key", "create", f'"{self.ssh_key_name}", {self.fingerprint}'))

        rules = describe_rules(self.rules)
        if self.firewall is None:
            rows.append(("firewall", "create", f'"{self.firewall_name}": {rules}'))
        else:
            rows.append(("firewall", "exists", f'"{self.firewall.name}" (id {self.firewall.id})'))
            if self.firewall_rules_differ:
                current = describe_rules(self.firewall.rules or [])
                rows.append(("firewall", "update", f"rules {current or 'none'} -> {rules}"))

        if self.server is None:
            rows.append(("server", "create", self._new_server_summary()))
        else:
            server = self.server
            ipv4 = (
                server.public_net.ipv4.ip
                if server.public_net and server.public_net.ipv4
                else "no IPv4"
            )
            rows.append(
                ("server", "exists", f'"{server.name}" (id {server.id}), {ipv4}, {server.status}')
            )
            if not self.firewall_applied:
                rows.append(
                    ("firewall", "apply", f'"{self.firewall_name}" to server "{server.name}"')
                )
            rows.extend(("server", "differs", f"{d} (not changed)") for d in self.differences)

        lines = [f'Hetzner Cloud plan for deployment "{self.deployment}":']
        lines += [f"  {what:<9} {state:<8} {detail}" for what, state, detail in rows]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  problem: {problem}" for problem in self.problems]
        if not self.changes and not self.problems:
            lines.append("  no changes")
        return lines

    def _new_server_summary(self) -> str:
        parts = [f'"{self.server_name}"']
        if self.server_type is not None:
            st = self.server_type
            parts.append(f"{st.name} ({st.architecture}, {st.cores} vCPU, {st.memory:g} GB)")
        if self.location is not None:
            parts.append(f"in {self.location.name}")
        if self.image is not None:
            parts.append(f"image {self.image.name} (id {self.image.id})")
        return ", ".join(parts)

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def raise_for_problems(self) -> None:
        """Raise ConfigError naming every problem, if there is one."""
        if self.problems:
            raise ConfigError("; ".join(self.problems))


def _find_server(client: Client, name: str, problems: list[str]) -> BoundServer | None:
    servers = client.servers.get_all(label_selector=deployment_selector(name))
    if len(servers) > 1:
        found = ", ".join(str(Resource("server", s.id, s.name)) for s in servers)
        problems.append(
            f"found {len(servers)} servers labelled for deployment {name} ({found}); "
            "delete the extra ones with `hcloud server delete ID`"
        )
    if servers:
        return servers[0]
    same_name = client.servers.get_by_name(name)
    if same_name is not None:
        problems.append(
            f'a server named "{name}" (id {same_name.id}) exists but was not made by '
            "zot-hetzner (its labels differ); delete or rename it, or set deployment.name "
            "to another name"
        )
    return None


def _server_differences(server: BoundServer, settings: Settings) -> tuple[Difference, ...]:
    wanted = settings.server
    differences = []
    current_type = server.server_type.name if server.server_type else "unknown"
    if current_type != wanted.type:
        differences.append(Difference("deployment.server.type", current_type, wanted.type))
    current_location = server.location.name if server.location else "unknown"
    if current_location != wanted.location:
        differences.append(
            Difference("deployment.server.location", current_location, wanted.location)
        )
    current_image = (
        server.image.name if server.image is not None and server.image.name else "unknown"
    )
    if current_image != wanted.image:
        differences.append(Difference("deployment.server.image", current_image, wanted.image))
    return tuple(differences)


def plan(settings: Settings, client: Client) -> Plan:
    """Read the project's resources for SETTINGS and compare them with the configuration.

    Makes only GET requests. Raises ConfigError for a rejected token and
    HetznerError when the API cannot be read; everything that would make
    apply() fail is returned in Plan.problems instead.
    """
    name = settings.name
    public_key = read_public_key(Path(settings.ssh.public_key))
    fingerprint = ssh_fingerprint(public_key)
    rules = firewall_rules(settings.ssh.allowed_cidrs, settings.ssh.port)
    problems: list[str] = []
    notes: list[str] = []

    with api_errors("reading the SSH keys", client):
        ssh_key = client.ssh_keys.get_by_fingerprint(fingerprint)
        if ssh_key is None:
            same_name = client.ssh_keys.get_by_name(ssh_key_name(name))
            if same_name is not None:
                problems.append(
                    f'an SSH key named "{same_name.name}" (id {same_name.id}) exists with another '
                    f"fingerprint ({same_name.fingerprint}); delete it or point "
                    "deployment.ssh.public_key at that key"
                )

    with api_errors("reading the firewalls", client):
        firewall = client.firewalls.get_by_name(firewall_name(name))
    rules_differ = False
    if firewall is not None:
        if not is_managed(firewall.labels, name):
            problems.append(
                f'a firewall named "{firewall.name}" (id {firewall.id}) exists but was not made by '
                "zot-hetzner (its labels differ); delete or rename it, or set deployment.name "
                "to another name"
            )
        rules_differ = not rules_match(firewall.rules or [], rules)

    with api_errors("reading the servers", client):
        server = _find_server(client, name, problems)

    with api_errors("reading the server types, locations and images", client):
        server_type = client.server_types.get_by_name(settings.server.type)
        location = client.locations.get_by_name(settings.server.location)
        image = None
        if server_type is not None:
            image = client.images.get_by_name_and_architecture(
                settings.server.image, server_type.architecture
            )
        if server is None:
            problems += _creation_problems(client, settings, server_type, location, image)

    differences: tuple[Difference, ...] = ()
    firewall_applied = False
    if server is not None:
        differences = _server_differences(server, settings)
        if differences:
            notes.append(
                "the server keeps its type, location and image; to change them, run destroy "
                "and deploy again (the registry data stays in the bucket)"
            )
        applied_ids = {fw.firewall.id for fw in (server.public_net.firewalls or [])}
        firewall_applied = firewall is not None and firewall.id in applied_ids

    return Plan(
        deployment=name,
        labels=deployment_labels(name),
        public_key=public_key,
        fingerprint=fingerprint,
        ssh_key_name=ssh_key_name(name),
        ssh_key=ssh_key,
        firewall_name=firewall_name(name),
        rules=tuple(rules),
        firewall=firewall,
        firewall_rules_differ=rules_differ,
        server_name=name,
        server_type=server_type,
        image=image,
        location=location,
        server=server,
        differences=differences,
        firewall_applied=firewall_applied,
        problems=tuple(problems),
        notes=tuple(notes),
    )


def _creation_problems(
    client: Client,
    settings: Settings,
    server_type: BoundServerType | None,
    location: BoundLocation | None,
    image: BoundImage | None,
) -> list[str]:
    problems = []
    if server_type is None:
        problems.append(
            f"server type {settings.server.type} not found; set deployment.server.type to one "
            "that `hcloud server-type list` shows"
        )
    if location is None:
        problems.append(
            f"location {settings.server.location} not found; set deployment.server.location to "
            "one that `hcloud location list` shows"
        )
    if server_type is not None and image is None:
        problems.append(
            f"image {settings.server.image} not found for {server_type.architecture} server "
            "types; set deployment.server.image"
        )
    if server_type is not None and location is not None:
        problem = availability_problem(client, server_type, location)
        if problem is not None:
            problems.append(problem)
    return problems


# ---------------------------------------------------------------------------
# Destroy


@dataclass(frozen=True)
class DestroyResult:
    """Resources destroy() deleted, and those it left in place with the reason."""

    removed: tuple[Resource, ...]
    kept: tuple[tuple[Resource, str], ...] = ()

    def lines(self) -> list[str]:
        lines = [f"removed {resource}" for resource in self.removed]
        lines += [f"kept {resource}: {reason}" for resource, reason in self.kept]
        return lines or ["nothing to remove"]


def destroy(
    settings: Settings,
    client: Client,
    remove_firewall: bool,
    *,
    remove_ssh_key: bool = False,
) -> DestroyResult:
    """Delete the deployment's servers, then optionally its firewall and uploaded SSH key.

    Only resources labelled for this deployment by zot-hetzner are touched;
    the Object Storage bucket and its contents never are. Each server delete
    is waited for before the next step, because a firewall can only be deleted
    once no server uses it.
    """
    name = settings.name
    removed: list[Resource] = []
    kept: list[tuple[Resource, str]] = []

    with api_errors("listing the servers", client):
        servers = client.servers.get_all(label_selector=deployment_selector(name))
    for server in servers:
        resource = Resource("server", server.id, server.name)
        with api_errors(f"deleting {resource}", client):
            action = client.servers.delete(server)
            wait_for([action])
        log.info("deleted %s", resource)
        removed.append(resource)

    with api_errors("reading the firewalls", client):
        firewall = client.firewalls.get_by_name(firewall_name(name))
    if firewall is not None:
        resource = Resource("firewall", firewall.id, firewall.name)
        if not remove_firewall:
            kept.append((resource, "firewall removal was not requested"))
        elif not is_managed(firewall.labels, name):
            kept.append((resource, "not made by zot-hetzner (its labels differ)"))
        else:
            with api_errors(f"deleting {resource}", client):
                client.firewalls.delete(firewall)
            log.info("deleted %s", resource)
            removed.append(resource)

    with api_errors("reading the SSH keys", client):
        keys = client.ssh_keys.get_all(label_selector=deployment_selector(name))
    for key in keys:
        resource = Resource("ssh-key", key.id, key.name)
        if not remove_ssh_key:
            kept.append((resource, "SSH key removal was not requested"))
            continue
        with api_errors(f"deleting {resource}", client):
            client.ssh_keys.delete(key)
        log.info("deleted %s", resource)
        removed.append(resource)

    return DestroyResult(removed=tuple(removed), kept=tuple(kept))
