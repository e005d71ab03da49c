"""Carry out a Hetzner Cloud plan: upload the SSH key, create the firewall and the server.

apply() changes only what the plan marks, so a second run with a fresh plan
changes nothing. Every resource it creates carries the deployment labels and
a label with this run's id. When a step fails, the run deletes what it
created, found by that label as well, so a resource whose create reply was
lost (a gateway timeout, say) is removed too. Resources that existed before
the run are never deleted; firewall rules that the run changed stay changed.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hcloud import APIException, Client
from hcloud.firewalls import BoundFirewall, Firewall, FirewallResource
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer, Server
from hcloud.ssh_keys import SSHKey

from .errors import ConfigError, OpsError
from .hetzner import (
    LABEL_RUN,
    HetznerError,
    Plan,
    Resource,
    ServerTypeUnavailableError,
    api_errors,
    suggest_alternatives,
    translate_error,
    wait_for,
)
from .render import USER_DATA_LIMIT

log = logging.getLogger(__name__)


class RollbackError(HetznerError):
    """A step failed and deleting what the run had created failed too; `remaining` lists what is left."""

    def __init__(
        self, message: str, remaining: tuple[Resource, ...], code: str | int | None
    ) -> None:
        super().__init__(message, code)
        self.remaining = remaining


@dataclass(frozen=True)
class ApplyResult:
    """The deployment's server after apply(), and what the run created or changed."""

    server: Resource
    status: str
    ipv4: str | None
    # The server's /64 network, as the API reports it.
    ipv6_network: str | None
    created: tuple[Resource, ...]
    changed: tuple[str, ...]

    @property
    def ipv6(self) -> str | None:
        """The first address (::1) of the server's /64.

        NOTE: Hetzner's Debian images configure ::1 on the public interface by
        observation (public reports of Hetzner Cloud hosts), not by an API
        contract; read the address on the server where it matters.
        """
        if self.ipv6_network is None:
            return None
        return str(ipaddress.ip_network(self.ipv6_network, strict=False)[1])

    def lines(self) -> list[str]:
        lines = [f"created {resource}" for resource in self.created]
        lines += self.changed
        addresses = ", ".join(a for a in (self.ipv4, self.ipv6) if a) or "no public address"
        lines.append(f"{self.server}: {self.status}, {addresses}")
        return lines


def apply(plan: Plan, user_data: str, client: Client, *, run_id: str | None = None) -> ApplyResult:
    """Create what PLAN marks as missing and return the server's id and addresses.

    USER_DATA goes to a new server only; an existing server keeps the user data
    it booted with. Waits for each action, bounded by the client's poll limits
    (see ops.hetzner.make_client). Raises ConfigError for plan problems or
    oversized user data before any request, OpsError for a failed step after
    rolling back, and RollbackError when the rollback failed as well.
    """
    plan.raise_for_problems()
    size = len(user_data.encode("utf-8"))
    if plan.server is None and size > USER_DATA_LIMIT:
        raise ConfigError(
            f"the user data is {size} bytes; the Hetzner Cloud API accepts at most "
            f"{USER_DATA_LIMIT} (32 KiB): render in deploy mode, which leaves the secret files out"
        )
    run = _Run(plan, client, run_id or secrets.token_hex(6))
    try:
        return run.execute(user_data)
    except OpsError as error:
        raise run.rolled_back(error) from error


class _Run:
    def __init__(self, plan: Plan, client: Client, run_id: str) -> None:
        self.plan = plan
        self.client = client
        self.run_id = run_id
        self.labels = {**plan.labels, LABEL_RUN: run_id}
        self.created: list[Resource] = []
        self.changed: list[str] = []

    def _created(self, resource: Resource) -> None:
        log.info("created %s", resource)
        self.created.append(resource)

    # -- steps -------------------------------------------------------------

    def execute(self, user_data: str) -> ApplyResult:
        key_name = self._ensure_ssh_key()
        firewall = self._ensure_firewall()
        if self.plan.server is None:
            server = self._create_server(user_data, key_name, firewall)
        else:
            server = self.plan.server
            if not self.plan.firewall_applied:
                self._apply_firewall(firewall, server)
        with api_errors(f'reading server "{server.name}"', self.client):
            server = self.client.servers.get_by_id(server.id)
        public_net = server.public_net
        return ApplyResult(
            server=Resource("server", server.id, server.name),
            status=server.status,
            ipv4=public_net.ipv4.ip if public_net and public_net.ipv4 else None,
            ipv6_network=public_net.ipv6.ip if public_net and public_net.ipv6 else None,
            created=tuple(self.created),
            changed=tuple(self.changed),
        )

    def _ensure_ssh_key(self) -> str:
        if self.plan.ssh_key is not None:
            return self.plan.ssh_key.name
        name = self.plan.ssh_key_name
        doing = f'uploading SSH key "{name}"'
        with api_errors(doing, self.client), self._lost_reply_check(doing, "ssh-key", name):
            key = self.client.ssh_keys.create(
                name=name, public_key=self.plan.public_key, labels=self.labels
            )
        self._created(Resource("ssh-key", key.id, key.name))
        return key.name

    def _ensure_firewall(self) -> BoundFirewall:
        plan = self.plan
        if plan.firewall is None:
            doing = f'creating firewall "{plan.firewall_name}"'
            with api_errors(doing, self.client):
                with self._lost_reply_check(doing, "firewall", plan.firewall_name):
                    response = self.client.firewalls.create(
                        name=plan.firewall_name, rules=list(plan.rules), labels=self.labels
                    )
                firewall = response.firewall
                self._created(Resource("firewall", firewall.id, firewall.name))
                wait_for(response.actions or [])
            return firewall
        if plan.firewall_rules_differ:
            with api_errors(f'setting the rules of firewall "{plan.firewall.name}"', self.client):
                wait_for(self.client.firewalls.set_rules(plan.firewall, list(plan.rules)))
            self.changed.append(f'set the rules of firewall "{plan.firewall.name}"')
            log.info("set the rules of firewall %s (id %d)", plan.firewall.name, plan.firewall.id)
        return plan.firewall

    def _create_server(self, user_data: str, key_name: str, firewall: BoundFirewall) -> BoundServer:
        plan = self.plan
        assert plan.server_type is not None
        assert plan.image is not None
        assert plan.location is not None
        doing = f'creating server "{plan.server_name}"'
        with api_errors(doing, self.client):
            try:
                # Catalogue objects and SSH keys go by name: the OpenAPI document
                # types these fields as strings, and an image name picks the
                # image of the server type's architecture.
                with self._lost_reply_check(doing, "server", plan.server_name):
                    response = self.client.servers.create(
                        name=plan.server_name,
                        server_type=ServerType(name=plan.server_type.name),
                        image=Image(name=plan.image.name),
                        location=Location(name=plan.location.name),
                        ssh_keys=[SSHKey(name=key_name)],
                        firewalls=[Firewall(id=firewall.id)],
                        user_data=user_data,
                        labels=self.labels,
                        start_after_create=True,
                    )
            except APIException as exc:
                if exc.code == "resource_unavailable":
                    raise self._unavailable(exc) from exc
                raise
            server = response.server
            self._created(Resource("server", server.id, server.name))
            wait_for([response.action, *response.next_actions])
        return server

    @contextmanager
    def _lost_reply_check(self, doing: str, kind: str, name: str) -> Iterator[None]:
        """Explain a uniqueness_error that follows a lost reply to a create request.

        hcloud-python retries a create request after a `timeout` error or a
        gateway timeout. When the first request did create the resource, the
        retry finds its name taken, and the resource carries this run's label.
        """
        try:
            yield
        except APIException as exc:
            if exc.code != "uniqueness_error" or not self._run_owns(kind, name):
                raise
            raise HetznerError(
                f"{doing} failed: the API reported an error although it had created the {kind}, "
                "so the retried request found the name taken; run the command again",
                code="lost_reply",
            ) from exc

    def _run_owns(self, kind: str, name: str) -> bool:
        return any(r.kind == kind and r.name == name for r in self._find_by_run_label())

    def _unavailable(self, error: APIException) -> ServerTypeUnavailableError:
        plan = self.plan
        assert plan.server_type is not None and plan.location is not None
        hint = suggest_alternatives(self.client, plan.server_type, plan.location.name)
        message = (
            f"server type {plan.server_type.name} is out of stock in {plan.location.name} "
            f"(412 resource_unavailable: {' '.join(error.message.split())})"
        )
        return ServerTypeUnavailableError(message + (f"; {hint}" if hint else ""), code=error.code)

    def _apply_firewall(self, firewall: BoundFirewall, server: BoundServer) -> None:
        with api_errors(
            f'applying firewall "{firewall.name}" to server "{server.name}"', self.client
        ):
            actions = self.client.firewalls.apply_to_resources(
                firewall, [FirewallResource(type="server", server=Server(id=server.id))]
            )
            wait_for(actions)
        self.changed.append(f'applied firewall "{firewall.name}" to server "{server.name}"')
        log.info("applied firewall %s to server %s", firewall.name, server.name)

    # -- rollback ----------------------------------------------------------

    def rolled_back(self, error: OpsError) -> OpsError:
        """Delete what this run created; return ERROR with the outcome added to its message."""
        found = self._find_by_run_label()
        lost_replies = [r for r in found if r not in self.created]
        to_delete = self.created + lost_replies
        if not to_delete:
            return error

        remaining = self._delete(to_delete)
        removed = [r for r in to_delete if r not in remaining]
        code = getattr(error, "code", None)
        parts = [str(error)]
        if removed:
            parts.append("rolled back: " + ", ".join(map(str, removed)))
        if lost_replies and code != "lost_reply":
            parts.append(
                "found by this run's label although a request reported an error: "
                + ", ".join(map(str, lost_replies))
            )
        if not remaining:
            result = type(error)(  # keep the type, so callers can tell the cause apart
                "; ".join(parts)
            )
            if isinstance(result, HetznerError):
                result.code = code
            return result
        parts.append(
            "the rollback failed, these remain: "
            + ", ".join(map(str, remaining))
            + "; remove them with: "
            + " && ".join(r.delete_command for r in remaining)
        )
        return RollbackError("; ".join(parts), tuple(remaining), code)

    def _find_by_run_label(self) -> list[Resource]:
        selector = f"{LABEL_RUN}={self.run_id}"
        found: list[Resource] = []
        try:
            for server in self.client.servers.get_all(label_selector=selector):
                found.append(Resource("server", server.id, server.name))
            for firewall in self.client.firewalls.get_all(label_selector=selector):
                found.append(Resource("firewall", firewall.id, firewall.name))
            for key in self.client.ssh_keys.get_all(label_selector=selector):
                found.append(Resource("ssh-key", key.id, key.name))
        except Exception as exc:  # the rollback goes on with what the run recorded itself
            log.warning(
                "cannot list the resources of run %s: %s",
                self.run_id,
                translate_error(exc, "listing"),
            )
        return found

    def _delete(self, resources: list[Resource]) -> list[Resource]:
        """Delete RESOURCES, servers first; return those that could not be deleted."""
        order = {"server": 0, "firewall": 1, "ssh-key": 2}
        remaining = []
        for resource in sorted(resources, key=lambda r: order[r.kind]):
            try:
                self._delete_one(resource)
                log.warning("rolled back: deleted %s", resource)
            except Exception as exc:  # keep going: each remaining resource is reported
                if isinstance(exc, APIException) and exc.code == "not_found":
                    continue
                log.error(
                    "rollback could not delete %s: %s", resource, translate_error(exc, "deleting")
                )
                remaining.append(resource)
        return remaining

    def _delete_one(self, resource: Resource) -> None:
        if resource.kind == "server":
            wait_for([self.client.servers.delete(Server(id=resource.id))])
        elif resource.kind == "firewall":
            self.client.firewalls.delete(Firewall(id=resource.id))
        else:
            self.client.ssh_keys.delete(SSHKey(id=resource.id))
