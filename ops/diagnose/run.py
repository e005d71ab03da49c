"""Diagnose several servers at once: probe each, gather local facts, judge, collect reports."""

from __future__ import annotations

import io
import ipaddress
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import state
from ..remote.connect import Target, connect_for
from ..remote.hosts import OK, HostOutput, Outcome, run_on_hosts
from ..secrets import HCLOUD_TOKEN, SecretSource
from . import local, remote
from .checks import run_checks, unreachable
from .result import STATUSES, CheckResult, Expectations, Inputs, LocalFacts


@dataclass(frozen=True)
class HostReport:
    name: str
    address: str
    results: tuple[CheckResult, ...]
    elapsed: float = 0.0
    facts: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def count(self, status: str) -> int:
        return sum(1 for result in self.results if result.status == status)

    @property
    def status(self) -> str:
        """The worst status of the host's checks: fail, warn or ok."""
        for status in ("fail", "warn"):
            if self.count(status):
                return status
        return "ok"

    def counts(self) -> dict[str, int]:
        return {status: self.count(status) for status in STATUSES}


@dataclass(frozen=True)
class Environment:
    """The SSH connector, DNS resolver and API client diagnose uses; tests replace parts of it."""

    connect: Callable[[Target], Any]
    resolver: local.Resolver = local.resolve
    # Tests map the resolved addresses to loopback forwarders.
    https_endpoint: local.Endpoint = local.https_endpoint
    # Returns an hcloud.Client, or None when no HCLOUD_TOKEN is available.
    hcloud_client: Callable[[], Any] | None = None
    max_parallel: int = 10


def default_environment(settings: Any, secrets: SecretSource | None = None) -> Environment:
    """Return the real environment: SSH with pinned keys, this machine's DNS, the Hetzner API."""
    from .. import hetzner
    from ..deploy import API_ENDPOINT_VARIABLE

    source = secrets if secrets is not None else SecretSource.load()
    token = source.get(HCLOUD_TOKEN)
    # The same API endpoint override that deploy honours (a recording proxy, a local fake).
    endpoint = os.environ.get(API_ENDPOINT_VARIABLE) or hetzner.DEFAULT_ENDPOINT

    def client() -> Any:
        return hetzner.make_client(token, endpoint=endpoint) if token is not None else None

    return Environment(connect=lambda target: connect_for(settings, target), hcloud_client=client)


def _server_address(value: Any) -> str | None:
    """Return an address from servers.json; a recorded IPv6 /64 means its ::1, as Hetzner assigns."""
    if not value:
        return None
    text = str(value)
    if "/" in text:
        try:
            return str(ipaddress.ip_network(text, strict=False)[1])
        except ValueError:
            return None
    return text


def recorded_servers(deployment: str) -> list[dict[str, Any]]:
    try:
        return state.read_servers(deployment)
    except (OSError, ValueError):
        return []


def expectations_for(
    settings: Any, target: Target, targets: Sequence[Target], servers: list[dict[str, Any]]
) -> tuple[Expectations, dict[str, Any] | None]:
    """Return what TARGET should look like, and its servers.json record if there is one."""
    record = None
    for server in servers:
        addresses = {
            server.get("ipv4"),
            _server_address(server.get("ipv6")),
            server.get("ssh_host"),
        }
        if server.get("name") == target.name or target.address in addresses:
            record = server
            break
    everything = {t.address for t in targets}
    for server in servers:
        everything |= {server.get("ipv4"), _server_address(server.get("ipv6"))}
    mine = {target.address}
    if record is not None:
        mine |= {record.get("ipv4"), _server_address(record.get("ipv6"))}
    return (
        Expectations(
            domain=settings.domain,
            tls=settings.tls,
            acme_staging=settings.acme_staging,
            bucket=settings.storage.bucket,
            endpoint=settings.storage.endpoint,
            recorded_addresses=frozenset(a for a in mine if a),
            deployment_addresses=frozenset(a for a in everything if a),
        ),
        record,
    )


class _Run:
    """One diagnose run over several targets: the state their worker threads share."""

    def __init__(self, settings: Any, targets: Sequence[Target], env: Environment) -> None:
        self.settings = settings
        self.targets = targets
        self.env = env
        self.params = remote.probe_params(settings.domain)
        self.servers = recorded_servers(settings.name)
        self.lock = threading.Lock()
        self.reports: dict[Target, HostReport] = {}
        # run_on_hosts hands work() only the connection; this maps it back to its target.
        self.targets_by_connection: dict[int, Target] = {}
        self.cached: dict[str, Any] = {}
        # A separate lock, so a slow DNS lookup does not hold up the other hosts' workers.
        self.cache_lock = threading.Lock()

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """Return COMPUTE() the first time KEY is asked for, its cached value afterwards."""
        with self.cache_lock:
            if key not in self.cached:
                self.cached[key] = compute()
            return self.cached[key]

    def resolution(self) -> dict[str, Any]:
        return self.once("resolution", lambda: self.env.resolver(self.settings.domain))

    def https(self, record: dict[str, Any] | None) -> dict[str, Any] | None:
        """GET https://DOMAIN/v2/ from here: at the recorded endpoint, else where DNS points."""
        domain, tls = self.settings.domain, self.settings.tls
        endpoint = (record or {}).get("https_endpoint")
        if endpoint:
            # deploy records where HTTPS is reached when DNS cannot tell (a local host).
            return local.https_at(domain, str(endpoint[0]), int(endpoint[1]), tls)
        resolution = self.resolution()
        return self.once(
            "https",
            lambda: local.https_from_here(domain, resolution, tls, self.env.https_endpoint),
        )

    def cloud_firewall(
        self, target: Target, record: dict[str, Any] | None, expect: Expectations
    ) -> dict[str, Any]:
        client = self.once(
            "hcloud", lambda: self.env.hcloud_client() if self.env.hcloud_client else None
        )
        if client is None:
            return {"skipped": "HCLOUD_TOKEN is not set"}
        return local.cloud_firewall(
            client,
            (record or {}).get("id"),
            str((record or {}).get("name") or target.name),
            set(expect.recorded_addresses),
        )

    def open_connection(self, target: Target) -> Any:
        conn = self.env.connect(target)
        with self.lock:
            self.targets_by_connection[id(conn)] = target
        return conn

    def work(self, conn: Any, out: HostOutput) -> Outcome:
        with self.lock:
            target = self.targets_by_connection[id(conn)]
        started = time.monotonic()
        expect, record = expectations_for(self.settings, target, self.targets, self.servers)

        sent_at = time.time()
        facts = remote.run_probe(conn, self.params)
        received_at = time.time()

        inputs = Inputs(
            facts=facts,
            local=LocalFacts(
                resolution=self.resolution(),
                https=self.https(record),
                cloud_firewall=self.cloud_firewall(target, record, expect),
                sent_at=sent_at,
                received_at=received_at,
            ),
            expect=expect,
        )
        report = HostReport(
            name=target.name,
            address=target.address,
            results=tuple(run_checks(inputs)),
            elapsed=time.monotonic() - started,
            facts=facts,
        )
        with self.lock:
            self.reports[target] = report
        return Outcome(OK, f"{report.count('fail')} failed, {report.count('warn')} warnings")


def diagnose(settings: Any, targets: Sequence[Target], env: Environment) -> list[HostReport]:
    """Probe and judge every target in parallel; return one report per target, in order."""
    state = _Run(settings, targets, env)
    # Per-host lines of run_on_hosts are not shown, because the report contains everything.
    results = run_on_hosts(
        targets,
        state.open_connection,
        state.work,
        stream=io.StringIO(),
        max_parallel=env.max_parallel,
    )
    ordered = []
    for result in results:
        report = state.reports.get(result.target)
        if report is None:
            report = HostReport(
                name=result.target.name,
                address=result.target.address,
                results=tuple(unreachable(result.message or "no result")),
            )
        ordered.append(report)
    return ordered


def exit_code(reports: Sequence[HostReport], warn_fails: bool = False) -> int:
    """Return 1 when any check failed (or warned, with WARN_FAILS), else 0."""
    bad = {"fail", "warn"} if warn_fails else {"fail"}
    return 1 if any(report.status in bad for report in reports) else 0
