"""Parse the raw command output and bytes that the probe reports into plain data."""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

# ---------------------------------------------------------------------------
# ufw


@dataclass(frozen=True)
class UfwRule:
    """One row of `ufw status verbose`."""

    to: str
    # Inclusive port ranges; None when the rule matches every port.
    ports: tuple[tuple[int, int], ...] | None
    proto: str | None
    v6: bool
    action: str
    direction: str
    source: str

    @property
    def public_source(self) -> bool:
        return self.source.startswith("Anywhere") or self.source in ("0.0.0.0/0", "::/0")


@dataclass(frozen=True)
class UfwStatus:
    active: bool
    default_incoming: str | None
    rules: tuple[UfwRule, ...]


_PORT_SPEC = re.compile(r"^(?P<ports>[\d,:]+)(?:/(?P<proto>tcp|udp))?$")
_DEFAULT = re.compile(r"^Default:\s*(?P<incoming>\w+)\s*\(incoming\)")
_COMMENT = re.compile(r"\s+#\s.*$")


def _parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    ranges = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        ranges.append((int(low), int(high or low)))
    return tuple(ranges)


def _parse_to(field: str) -> tuple[tuple[tuple[int, int], ...] | None, str | None, bool]:
    """Return the ports, protocol and IPv6 flag of a `To` column.

    The column looks like `80/tcp`, `80,443/tcp (v6)`, `Anywhere`,
    `203.0.113.10 443/tcp` or `80,443/tcp (WWW Full)` for an application profile.
    """
    v6 = "(v6)" in field
    plain = re.sub(r"\([^()]*(\([^()]*\))?[^()]*\)", " ", field)
    for token in plain.split():
        match = _PORT_SPEC.match(token)
        if match:
            return _parse_ports(match["ports"]), match["proto"], v6
    return None, None, v6


def parse_ufw_status(text: str) -> UfwStatus:
    """Parse `ufw status verbose` (plain `ufw status` works too, without the default policy)."""
    active = False
    default_incoming = None
    rules = []
    in_table = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("Status:"):
            active = line.split(":", 1)[1].strip() == "active"
            continue
        match = _DEFAULT.match(line)
        if match:
            default_incoming = match["incoming"].lower()
            continue
        if line.startswith("--"):
            in_table = True
            continue
        if not in_table or not line.strip():
            continue
        columns = re.split(r"\s{2,}", _COMMENT.sub("", line).strip())
        if len(columns) < 3:
            continue
        to, action_text, source = columns[0], columns[1], columns[2]
        action, _, direction = action_text.partition(" ")
        ports, proto, v6 = _parse_to(to)
        rules.append(
            UfwRule(
                to=to,
                ports=ports,
                proto=proto,
                v6=v6 or "(v6)" in source,
                action=action.upper(),
                direction=(direction or "IN").upper(),
                source=source,
            )
        )
    return UfwStatus(active=active, default_incoming=default_incoming, rules=tuple(rules))


Access = Literal["open", "restricted", "closed"]


def ufw_port_access(status: UfwStatus, port: int, proto: str, v6: bool) -> tuple[Access, list[str]]:
    """Return whether PORT/PROTO admits the whole Internet over IPv4 or IPv6.

    ufw applies the first matching rule, then the default policy. "restricted"
    means only some source networks are allowed; the list names them.
    """
    if not status.active:
        return "open", []
    allowed_from: list[str] = []
    for rule in status.rules:
        if rule.direction != "IN" or rule.v6 != v6:
            continue
        if rule.proto not in (None, proto):
            continue
        if rule.ports is not None and not any(low <= port <= high for low, high in rule.ports):
            continue
        if rule.public_source:
            if rule.action in ("ALLOW", "LIMIT"):
                return "open", []
            return "closed", allowed_from
        if rule.action in ("ALLOW", "LIMIT"):
            allowed_from.append(rule.source)
    if status.default_incoming == "allow":
        return "open", []
    return ("restricted" if allowed_from else "closed"), allowed_from


# ---------------------------------------------------------------------------
# ss


def parse_listening(text: str) -> list[tuple[str, int]]:
    """Return (address, port) of each listening TCP socket in `ss -H -t -l -n` output."""
    sockets = []
    for line in text.splitlines():
        columns = line.split()
        if len(columns) < 5 or columns[0] != "LISTEN":
            continue
        local = columns[3]
        address, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        address = address.strip("[]").split("%", 1)[0]
        sockets.append((address, int(port)))
    return sockets


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


# ---------------------------------------------------------------------------
# X.509


@dataclass(frozen=True)
class Certificate:
    subject_cn: str | None
    issuer_cn: str | None
    issuer_org: str | None
    not_before: float
    not_after: float
    dns_names: tuple[str, ...]

    @property
    def issuer(self) -> str:
        parts = [part for part in (self.issuer_cn, self.issuer_org) if part]
        return ", ".join(dict.fromkeys(parts)) or "unknown issuer"

    def covers(self, domain: str) -> bool:
        """Tell whether DOMAIN matches a DNS name of the certificate (one-label wildcards)."""
        domain = domain.lower().rstrip(".")
        for name in self.dns_names:
            name = name.lower().rstrip(".")
            if name == domain:
                return True
            if name.startswith("*.") and domain.partition(".")[2] == name[2:]:
                return True
        return False


def _name_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def parse_certificate(der_base64: str) -> Certificate:
    """Parse a base64 DER certificate; raises ValueError when it is not one."""
    certificate = x509.load_der_x509_certificate(base64.b64decode(der_base64))
    try:
        extension = certificate.extensions.get_extension_for_oid(
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME
        )
        dns_names = tuple(extension.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    return Certificate(
        subject_cn=_name_attribute(certificate.subject, NameOID.COMMON_NAME),
        issuer_cn=_name_attribute(certificate.issuer, NameOID.COMMON_NAME),
        issuer_org=_name_attribute(certificate.issuer, NameOID.ORGANIZATION_NAME),
        not_before=certificate.not_valid_before_utc.timestamp(),
        not_after=certificate.not_valid_after_utc.timestamp(),
        dns_names=dns_names,
    )


# ---------------------------------------------------------------------------
# addresses


def server_addresses(addresses: list[dict]) -> set[str]:
    """Return the global-scope addresses of `ip -j addr` as the probe reports them."""
    return {
        entry["address"]
        for entry in addresses
        if entry.get("scope") == "global" and entry.get("address")
    }


def family(address: str) -> int | None:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return None
