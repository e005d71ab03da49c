"""Judge the facts of one host: pure functions from facts to CheckResults.

Every check reads the probe's facts, the local facts and the expectations,
and returns one result. A failure that follows from another failed check (zot
refusing connections because zot.service is down) is reported as `skip` with
`after` naming the root cause. So a single broken thing shows as a single
failure with its fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..probe import PROBE_VERSION
from ..result import CheckResult, Inputs, fail, ok, warn
from . import network, services, storage, system


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Inputs], CheckResult]
    # A failure of this check is explained by a failure of any of these.
    after: tuple[str, ...] = ()


def probe(inputs: Inputs) -> CheckResult:
    facts = inputs.facts
    elapsed = (facts.get("finished_at") or 0) - (facts.get("started_at") or 0)
    if facts.get("probe_version") != PROBE_VERSION:
        return warn(
            f"probe version {facts.get('probe_version')} answered, expected {PROBE_VERSION}",
            "the facts may lack fields this version of the toolkit reads",
        )

    if facts.get("uid") != 0:
        return warn(
            f"probe ran as uid {facts.get('uid')}, not root",
            "without root the credentials, ufw and podman state cannot be read",
            "set deployment.ssh.user to root or give the user passwordless sudo",
            "local",
        )
    return ok(f"probe ran as root on {facts.get('hostname')} in {elapsed:.1f} s")


CHECKS: tuple[Check, ...] = (
    Check("probe", probe),
    Check("cloud-init", system.cloud_init, ("bootstrap",)),
    Check("bootstrap", system.bootstrap),
    Check(
        "zot-service",
        services.zot_service,
        ("bootstrap", "zot-config", "htpasswd", "s3-credentials", "s3-bucket"),
    ),
    Check("zot-http", services.zot_http, ("zot-service",)),
    Check("zot-config", services.zot_config),
    Check("htpasswd", services.htpasswd),
    Check("s3-credentials", storage.s3_credentials),
    Check("s3-bucket", storage.s3_bucket, ("s3-credentials", "zot-config", "clock")),
    Check("caddy-config", services.caddy_config),
    Check("caddy-service", services.caddy_service, ("bootstrap", "caddy-config", "dns")),
    Check("http-port", network.http_port, ("caddy-service",)),
    Check(
        "certificate",
        network.certificate,
        ("caddy-service", "dns", "ufw", "cloud-firewall", "http-port"),
    ),
    Check("https-on-server", network.https_on_server, ("certificate", "zot-http", "caddy-service")),
    Check("dns", network.dns),
    Check(
        "https-from-here",
        network.https_from_here,
        ("dns", "ufw", "cloud-firewall", "certificate", "https-on-server"),
    ),
    Check("ufw", network.ufw),
    Check("cloud-firewall", network.cloud_firewall),
    Check("web-listeners", network.web_listeners, ("caddy-service",)),
    Check("zot-exposure", network.zot_exposure),
    Check("auto-update", services.auto_update, ("zot-service",)),
    Check("disk", system.disk),
    Check("memory", system.memory),
    Check("clock", system.clock),
    Check("zot-logs", system.zot_logs),
    Check("caddy-logs", system.caddy_logs),
    Check("failed-units", system.failed_units),
    Check("change-lock", system.change_lock),
    Check("reboot", system.reboot),
)
NAMES = tuple(check.name for check in CHECKS)


def _evaluation_order(checks: tuple[Check, ...]) -> list[Check]:
    """Order CHECKS so that each comes after the checks it depends on."""
    by_name = {check.name: check for check in checks}
    ordered: list[Check] = []
    seen: set[str] = set()

    def visit(check: Check, path: tuple[str, ...]) -> None:
        if check.name in seen:
            return
        if check.name in path:
            raise ValueError(f"checks depend on each other in a cycle: {' -> '.join(path)}")
        for name in check.after:
            visit(by_name[name], (*path, check.name))
        seen.add(check.name)
        ordered.append(check)

    for check in checks:
        visit(check, ())
    return ordered


def run_checks(inputs: Inputs, checks: tuple[Check, ...] = CHECKS) -> list[CheckResult]:
    """Run every check on INPUTS and return the results in the order of CHECKS."""
    results: dict[str, CheckResult] = {}
    for check in _evaluation_order(checks):
        try:
            result = replace(check.run(inputs), name=check.name)
        except Exception as error:  # a bug in one check must not hide the others
            result = fail(
                f"the check itself failed: {type(error).__name__}: {error}",
                "a fact had an unexpected form; please report this with `inv diagnose --json`",
            )
            result = replace(result, name=check.name)
        if result.status == "fail":
            roots: list[str] = []
            for name in check.after:
                earlier = results[name]
                if earlier.status == "fail":
                    roots.append(name)
                roots.extend(earlier.after)
            if roots:
                result = replace(result, status="skip", after=tuple(dict.fromkeys(roots)))
        results[check.name] = result
    return [results[check.name] for check in checks]


def unreachable(message: str) -> list[CheckResult]:
    """Return the results of a host whose probe could not run: one failed `ssh` check."""
    return [
        replace(
            fail(
                message,
                "the toolkit cannot open an SSH session or run python3 on the server",
                "ssh into the server by hand with the same user and key to see why",
                "local",
            ),
            name="ssh",
        )
    ]
