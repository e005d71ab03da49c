"""Facts gathered on the operator's machine: DNS, HTTPS from here, the Cloud Firewall."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ..errors import OpsError
from . import probe

# Returns {"ipv4": [...], "ipv6": [...], "error": str | None} for a domain.
Resolver = Callable[[str], dict[str, Any]]
# Maps a resolved address to the (address, port) to connect to for HTTPS.
Endpoint = Callable[[str], tuple[str, int]]


def https_endpoint(address: str) -> tuple[str, int]:
    return address, 443


def resolve(domain: str) -> dict[str, Any]:
    """Resolve DOMAIN's A and AAAA records with this machine's resolver."""
    found: dict[str, Any] = {"ipv4": [], "ipv6": [], "error": None}
    errors = []
    for family, key in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
        try:
            infos = socket.getaddrinfo(domain, 443, family, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            errors.append(str(error))
            continue
        found[key] = sorted({str(info[4][0]) for info in infos})
    if not found["ipv4"] and not found["ipv6"]:
        found["error"] = errors[0] if errors else "no address"
    return found


def https_from_here(
    domain: str, resolution: dict[str, Any], tls: str, endpoint: Endpoint = https_endpoint
) -> dict[str, Any] | None:
    """GET https://DOMAIN/v2/ from here at each resolved address until one responds.

    The certificate is verified against this machine's CAs for ACME
    certificates; Caddy's internal CA is untrusted by design, so then it is not.
    Returns None when DOMAIN did not resolve.
    """
    addresses = list(resolution.get("ipv4") or []) + list(resolution.get("ipv6") or [])
    if not addresses:
        return None
    reply: dict[str, Any] = {}
    for address in addresses:
        connect_to, port = endpoint(address)
        reply = probe.http_request(
            connect_to, port, domain, "/v2/", server_name=domain, verify=(tls == "acme")
        )
        reply["address"] = address
        if "status" in reply or reply.get("verify_error"):
            break
    return reply


def https_at(domain: str, address: str, port: int, tls: str) -> dict[str, Any]:
    """GET https://DOMAIN/v2/ at ADDRESS:PORT, for a server whose record names where HTTPS is."""
    reply = probe.http_request(
        address, port, domain, "/v2/", server_name=domain, verify=(tls == "acme")
    )
    reply["address"] = f"{address}:{port}, the recorded endpoint"
    return reply


def cloud_firewall(
    client: Any, server_id: int | None, name: str, addresses: set[str]
) -> dict[str, Any]:
    """Return the Cloud Firewalls applied to the server, with their inbound rules.

    The server is found by its recorded id, else by name, else by a public
    address. CLIENT is an hcloud.Client.
    """
    from .. import hetzner

    try:
        with hetzner.api_errors("reading the server's Cloud Firewalls", client):
            server = _find_server(client, server_id, name, addresses)
            if server is None:
                return {"error": f"no server named {name} or with address {sorted(addresses)}"}
            firewalls = []
            for applied in server.public_net.firewalls or []:
                firewall = client.firewalls.get_by_id(applied.firewall.id)
                firewalls.append(
                    {
                        "name": firewall.name,
                        "status": applied.status,
                        "rules": [
                            {
                                "direction": rule.direction,
                                "protocol": rule.protocol,
                                "port": rule.port,
                                "source_ips": list(rule.source_ips or []),
                            }
                            for rule in firewall.rules or []
                        ],
                    }
                )
    except OpsError as error:
        return {"error": str(error)}
    ipv6 = server.public_net.ipv6
    return {
        "server": server.name,
        "ipv6": bool(ipv6 and ipv6.ip),
        "firewalls": firewalls,
    }


def _find_server(client: Any, server_id: int | None, name: str, addresses: set[str]) -> Any:
    if server_id is not None:
        return client.servers.get_by_id(server_id)
    server = client.servers.get_by_name(name)
    if server is not None:
        return server
    for candidate in client.servers.get_all():
        ipv4 = candidate.public_net.ipv4.ip if candidate.public_net.ipv4 else None
        if ipv4 in addresses:
            return candidate
    return None
