"""The verdict of one check, and the inputs every check reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "skip"]
# Where the fix command runs: on the operator's machine in the project
# directory, on the server as root, or at the DNS provider of the domain.
Where = Literal["local", "server", "dns", ""]

STATUSES: tuple[Status, ...] = ("ok", "warn", "fail", "skip")


@dataclass(frozen=True)
class CheckResult:
    """One check on one host: status, one line of evidence, and for a problem its cause and fix.

    `skip` means the check was not judged: its input is missing (no
    HCLOUD_TOKEN, a domain that does not resolve from here) or a check it
    depends on failed, which `after` names.
    """

    name: str
    status: Status
    evidence: str
    cause: str = ""
    fix: str = ""
    where: Where = ""
    after: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["after"] = list(self.after)
        return data


def ok(evidence: str) -> CheckResult:
    return CheckResult("", "ok", evidence)


def skip(evidence: str) -> CheckResult:
    return CheckResult("", "skip", evidence)


def warn(evidence: str, cause: str = "", fix: str = "", where: Where = "") -> CheckResult:
    return CheckResult("", "warn", evidence, cause, fix, where)


def fail(evidence: str, cause: str = "", fix: str = "", where: Where = "") -> CheckResult:
    return CheckResult("", "fail", evidence, cause, fix, where)


@dataclass(frozen=True)
class Expectations:
    """What the deployment's settings say a healthy host looks like."""

    domain: str
    tls: str = "acme"
    acme_staging: bool = False
    bucket: str | None = None
    endpoint: str | None = None
    # Addresses recorded for this host (servers.json or --host) and for every
    # host of the deployment; loopback addresses among them are ignored.
    recorded_addresses: frozenset[str] = frozenset()
    deployment_addresses: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LocalFacts:
    """Facts gathered on the operator's machine rather than on the server."""

    # {"ipv4": [...], "ipv6": [...], "error": str | None}
    resolution: dict[str, Any] = field(default_factory=dict)
    # The request to https://DOMAIN/v2/ from here; None when the domain does not resolve.
    https: dict[str, Any] | None = None
    # Hetzner Cloud Firewalls applied to the server; {"skipped": reason} without a token.
    cloud_firewall: dict[str, Any] = field(default_factory=lambda: {"skipped": "not queried"})
    # Local clock just before the probe was sent and after its answer arrived.
    sent_at: float | None = None
    received_at: float | None = None


@dataclass(frozen=True)
class Inputs:
    facts: dict[str, Any]
    local: LocalFacts
    expect: Expectations
