"""diagnose checks: a healthy host passes; each broken thing fails exactly its check with its fix."""

from __future__ import annotations

import base64
import copy
import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ops import layout
from ops.diagnose import checks
from ops.diagnose.checks import Check, run_checks
from ops.diagnose.result import Expectations, Inputs, LocalFacts, fail, ok

NOW = 1_767_225_600.0  # 2026-01-01 00:00 UTC
DOMAIN = "cr.example.com"
IPV4 = "203.0.113.10"
IPV6 = "2001:db8:10::1"
OTHER_IPV4 = "198.51.100.7"
BUCKET = "registry-bucket"
DAY = 86400

UFW_HEALTHY = """Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    Anywhere                   # zot-hetzner ssh
80/tcp                     ALLOW IN    Anywhere                   # zot-hetzner http
443/tcp                    ALLOW IN    Anywhere                   # zot-hetzner https
443/udp                    ALLOW IN    Anywhere                   # zot-hetzner http3
22/tcp (v6)                ALLOW IN    Anywhere (v6)              # zot-hetzner ssh
80/tcp (v6)                ALLOW IN    Anywhere (v6)              # zot-hetzner http
443/tcp (v6)               ALLOW IN    Anywhere (v6)              # zot-hetzner https
443/udp (v6)               ALLOW IN    Anywhere (v6)              # zot-hetzner http3
"""

SS_HEALTHY = """LISTEN 0      4096       127.0.0.1:5000       0.0.0.0:*
LISTEN 0      128          0.0.0.0:22         0.0.0.0:*
LISTEN 0      4096               *:443              *:*
LISTEN 0      4096               *:80               *:*
LISTEN 0      128             [::]:22            [::]:*
"""


def make_certificate(
    domain: str = DOMAIN,
    not_after: float = NOW + 60 * DAY,
    issuer_cn: str = "R11",
    issuer_org: str = "Let's Encrypt",
) -> str:
    """Return a base64 DER certificate for DOMAIN, as the probe reports it."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, issuer_org),
        ]
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.fromtimestamp(not_after - 90 * DAY, dt.UTC))
        .not_valid_after(dt.datetime.fromtimestamp(not_after, dt.UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(certificate.public_bytes(Encoding.DER)).decode()


CERTIFICATE = make_certificate()


def unit(name: str, **overrides: str) -> dict[str, str]:
    properties = {
        "Id": name,
        "LoadState": "loaded",
        "ActiveState": "active",
        "SubState": "running",
        "UnitFileState": "enabled",
        "Result": "success",
        "NRestarts": "0",
        "ExecMainStatus": "0",
        "ConditionResult": "yes",
        "ActiveEnterTimestamp": "Wed 2025-12-31 22:00:00 UTC",
    }
    properties.update(overrides)
    return properties


def healthy_facts() -> dict[str, Any]:
    """A probe document of a healthy server, in the shape probe.collect() returns."""
    file = {"exists": True, "mode": "0600", "uid": 0, "gid": 0, "size": 100, "mtime": NOW - DAY}
    return {
        "probe_version": 1,
        "started_at": NOW,
        "finished_at": NOW + 1.4,
        "hostname": "registry",
        "uid": 0,
        "python": "3.11.2",
        "uptime_seconds": 7200.0,
        "timings_ms": {},
        "credentials": {
            **file,
            "access_key_present": True,
            "secret_key_present": True,
            "keys": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        },
        "system": {"state": "running", "container": "none"},
        "units": {
            layout.ZOT_UNIT: unit(layout.ZOT_UNIT),
            layout.CADDY_UNIT: unit(layout.CADDY_UNIT),
            layout.AUTOUPDATE_TIMER: unit(
                layout.AUTOUPDATE_TIMER, SubState="waiting", NRestarts=""
            ),
            layout.AUTOUPDATE_SERVICE: unit(
                layout.AUTOUPDATE_SERVICE,
                ActiveState="inactive",
                SubState="dead",
                UnitFileState="static",
            ),
        },
        "failed_units": {"units": []},
        "container": {
            "found": True,
            "status": "running",
            "running": True,
            "exit_code": 0,
            "error": "",
            "started_at": "2025-12-31T22:00:01Z",
            "restart_count": 0,
            "image_name": "ghcr.io/project-zot/zot-linux-amd64:v2.1.14",
            "path": "/usr/bin/zot",
            "labels": {layout.AUTOUPDATE_LABEL: "registry", "PODMAN_SYSTEMD_UNIT": "zot.service"},
            "mounts": [{"source": "/etc/zot", "destination": "/etc/zot"}],
            "ports": [{"container_port": "5000/tcp", "host_ip": "127.0.0.1", "host_port": "5000"}],
        },
        "auto_update": {
            "rc": 0,
            "entries": [
                {
                    "unit": "zot.service",
                    "containername": "zot",
                    "image": "ghcr.io/project-zot/zot-linux-amd64:v2.1.14",
                    "policy": "registry",
                    "updated": "false",
                }
            ],
        },
        "zot_config": {
            **file,
            "mode": "0644",
            "storage": {
                "root_directory": "/var/lib/zot",
                "driver": {
                    "name": "s3",
                    "bucket": BUCKET,
                    "region": "fsn1",
                    "regionendpoint": "https://fsn1.your-objectstorage.com",
                    "rootdirectory": "/zot",
                    "secure": True,
                    "skipverify": False,
                    "forcepathstyle": True,
                },
                "inline_access_key": False,
                "inline_secret_key": False,
            },
            "http": {
                "address": "0.0.0.0",  # noqa: S104 - zot inside its container
                "port": "5000",
                "external_url": f"https://{DOMAIN}",
                "htpasswd_path": layout.ZOT_HTPASSWD,
                "compat": ["docker2s2"],
            },
            "log": {"level": "info", "output": layout.ZOT_LOG, "audit": layout.ZOT_AUDIT_LOG},
        },
        "zot_verify": {"ran": True, "rc": 0, "message": "config file is valid"},
        "htpasswd": {
            **file,
            "schemes": {"bcrypt": 2, "apr1": 0, "sha1": 0, "other": 0},
            "entries": 2,
        },
        "zot_http": {
            "url": "http://127.0.0.1:5000/v2/",
            "status": 401,
            "www_authenticate": 'Basic realm="zot"',
            "location": None,
            "server": None,
            "elapsed_ms": 2,
        },
        "s3": {
            "attempted": True,
            "endpoint_host": "fsn1.your-objectstorage.com",
            "path_style": True,
            "status": 200,
            "error_code": None,
            "elapsed_ms": 85,
        },
        "caddy": {
            "binary": layout.CADDY_BINARY,
            "binary_file": {**file, "mode": "0755"},
            "caddyfile": {**file, "mode": "0644"},
            "version": "v2.10.2",
            "validate": {"rc": 0, "message": "Valid configuration", "user": "caddy"},
        },
        "caddy_https": {
            "url": f"https://{DOMAIN}/v2/",
            "tls_version": "TLSv1.3",
            "certificate_der": CERTIFICATE,
            "status": 401,
            "www_authenticate": 'Basic realm="zot"',
            "location": None,
            "server": "Caddy",
            "elapsed_ms": 9,
        },
        "caddy_tls_verify": {"verified": True},
        "caddy_http": {
            "url": f"http://{DOMAIN}/v2/",
            "status": 308,
            "www_authenticate": None,
            "location": f"https://{DOMAIN}/v2/",
            "server": "Caddy",
            "elapsed_ms": 1,
        },
        "addresses": {
            "addresses": [
                {"interface": "lo", "family": "inet", "address": "127.0.0.1", "scope": "host"},
                {"interface": "lo", "family": "inet6", "address": "::1", "scope": "host"},
                {"interface": "eth0", "family": "inet", "address": IPV4, "scope": "global"},
                {"interface": "eth0", "family": "inet6", "address": IPV6, "scope": "global"},
                {"interface": "eth0", "family": "inet6", "address": "fe80::1", "scope": "link"},
            ]
        },
        "resolution": {"addresses": ["127.0.1.1"]},
        "ufw": {"rc": 0, "output": UFW_HEALTHY, "stderr": ""},
        "listening": {"rc": 0, "output": SS_HEALTHY, "stderr": ""},
        "disks": {
            path: {
                "exists": True,
                "device": 2049,
                "total_bytes": 40 * 1024**3,
                "available_bytes": 30 * 1024**3,
                "inodes_total": 2_600_000,
                "inodes_available": 2_400_000,
            }
            for path in ("/", "/var/lib/containers", "/var/log")
        },
        "memory": {
            "total_bytes": 4 * 1024**3,
            "available_bytes": 3 * 1024**3,
            "swap_total_bytes": 0,
            "swap_free_bytes": 0,
            "oom_kills_since_boot": 0,
        },
        "timedate": {
            "rc": 0,
            "properties": {"Timezone": "UTC", "NTP": "yes", "NTPSynchronized": "yes"},
        },
        "logs": {
            "window_seconds": DAY,
            "zot": [
                {"source": "journal zot.service", "lines": 40, "errors": 0, "sample": None},
                {"source": layout.ZOT_LOG, "exists": True, "lines": 500, "errors": 0},
            ],
            "caddy": [{"source": "journal caddy.service", "lines": 30, "errors": 0}],
            "caddy_access": {
                "source": layout.CADDY_ACCESS_LOG,
                "exists": True,
                "requests": 120,
                "server_errors": 0,
            },
        },
        "cloud_init": {
            "status_rc": 0,
            "status": {"status": "done", "detail": "DataSourceHetzner"},
            "result_errors": [],
            "result_error_count": 0,
            "boot_finished": True,
        },
        "bootstrap": {
            **file,
            "mode": "0644",
            "result": "done",
            "reason": None,
            "caddy_version": "2.10.2",
        },
        "lock": {"exists": False},
        "reboot": {"required": False},
    }


FIREWALL_RULES = [
    {"direction": "in", "protocol": "tcp", "port": port, "source_ips": ["0.0.0.0/0", "::/0"]}
    for port in ("22", "80", "443")
]


def healthy_local() -> LocalFacts:
    return LocalFacts(
        resolution={"ipv4": [IPV4], "ipv6": [IPV6], "error": None},
        https={"address": IPV4, "status": 401, "www_authenticate": 'Basic realm="zot"'},
        cloud_firewall={
            "server": "registry",
            "ipv6": True,
            "firewalls": [{"name": "registry-fw", "status": "applied", "rules": FIREWALL_RULES}],
        },
        sent_at=NOW - 0.5,
        received_at=NOW + 1.6,
    )


def expectations(**overrides: Any) -> Expectations:
    fields: dict[str, Any] = {
        "domain": DOMAIN,
        "tls": "acme",
        "bucket": BUCKET,
        "recorded_addresses": frozenset({IPV4, IPV6}),
        "deployment_addresses": frozenset({IPV4, IPV6}),
    }
    fields.update(overrides)
    return Expectations(**fields)


def judge(facts: dict[str, Any], local: LocalFacts | None = None, **expect: Any):
    results = run_checks(Inputs(facts, local or healthy_local(), expectations(**expect)))
    return {result.name: result for result in results}


def statuses(results, status: str) -> set[str]:
    return {name for name, result in results.items() if result.status == status}


# --- healthy -------------------------------------------------------------------------


def test_healthy_host_passes_every_check():
    results = judge(healthy_facts())
    assert list(results) == list(checks.NAMES)
    problems = {name: r.evidence for name, r in results.items() if r.status != "ok"}
    assert problems == {}


def test_healthy_evidence_names_the_facts():
    results = judge(healthy_facts())
    assert "401" in results["zot-http"].evidence
    assert "expires in 60 days" in results["certificate"].evidence
    assert BUCKET in results["s3-bucket"].evidence
    assert IPV4 in results["dns"].evidence


def test_internal_tls_accepts_short_lived_untrusted_certificate():
    facts = healthy_facts()
    facts["caddy_https"]["certificate_der"] = make_certificate(
        not_after=NOW + 10 * 3600,
        issuer_cn="Caddy Local Authority - ECC Intermediate",
        issuer_org="",
    )
    facts["caddy_tls_verify"] = {"verified": False, "error": "unable to get local issuer"}
    results = judge(facts, tls="internal")
    assert results["certificate"].status == "ok"
    assert "internal CA" in results["certificate"].evidence


def test_missing_token_skips_cloud_firewall():
    local = replace(healthy_local(), cloud_firewall={"skipped": "HCLOUD_TOKEN is not set"})
    results = judge(healthy_facts(), local)
    assert results["cloud-firewall"].status == "skip"
    assert statuses(results, "fail") == set()


def test_unresolvable_domain_internal_tls():
    local = replace(
        healthy_local(),
        resolution={"ipv4": [], "ipv6": [], "error": "Name or service not known"},
        https=None,
    )
    results = judge(healthy_facts(), local, tls="internal")
    assert results["https-from-here"].status == "skip"
    assert results["dns"].status == "warn"
    assert statuses(results, "fail") == set()


# --- one broken thing at a time ------------------------------------------------------

Mutation = Callable[[dict[str, Any], dict[str, Any]], None]


def zot_stopped(facts, local):
    facts["units"][layout.ZOT_UNIT].update(ActiveState="inactive", SubState="dead")
    facts["container"] = {"found": False}
    facts["zot_http"] = {"error": "ConnectionRefusedError: refused", "refused": True}
    facts["caddy_https"]["status"] = 502
    facts["auto_update"] = {"rc": 0, "entries": []}
    local["https"] = {"address": IPV4, "status": 502}


def zot_crash_loop_wrong_secret(facts, local):
    facts["units"][layout.ZOT_UNIT].update(
        ActiveState="activating", SubState="auto-restart", Result="exit-code", NRestarts="7"
    )
    facts["container"] = {"found": False}
    facts["zot_http"] = {"error": "ConnectionRefusedError: refused", "refused": True}
    facts["caddy_https"]["status"] = 502
    facts["s3"].update(status=403, error_code="SignatureDoesNotMatch")
    local["https"] = {"address": IPV4, "status": 502}


def wrong_secret_zot_running(facts, local):
    facts["s3"].update(status=403, error_code="SignatureDoesNotMatch")


def unknown_access_key(facts, local):
    facts["s3"].update(status=403, error_code="InvalidAccessKeyId")


def missing_bucket(facts, local):
    facts["s3"].update(status=404, error_code="NoSuchBucket")


def endpoint_unreachable(facts, local):
    del facts["s3"]["status"]
    facts["s3"]["error"] = "gaierror: [Errno -2] Name or service not known"


def credentials_missing(facts, local):
    facts["credentials"] = {
        "exists": False,
        "access_key_present": False,
        "secret_key_present": False,
        "keys": [],
    }
    facts["s3"] = {"attempted": False, "reason": "credentials missing"}


def credentials_readable(facts, local):
    facts["credentials"]["mode"] = "0644"


def broken_caddyfile(facts, local):
    facts["caddy"]["validate"] = {
        "rc": 1,
        "message": "Error: adapting config using caddyfile: /etc/caddy/Caddyfile:12: "
        "unrecognized directive: revers_proxy",
        "user": "caddy",
    }


def broken_caddyfile_after_restart(facts, local):
    broken_caddyfile(facts, local)
    facts["units"][layout.CADDY_UNIT].update(
        ActiveState="failed", SubState="failed", Result="exit-code", ExecMainStatus="1"
    )
    refused = {"error": "ConnectionRefusedError: refused", "refused": True}
    facts["caddy_https"] = dict(refused)
    facts["caddy_http"] = dict(refused)
    facts["caddy_tls_verify"] = {"verified": None, "error": "refused"}
    facts["listening"]["output"] = "LISTEN 0 4096 127.0.0.1:5000 0.0.0.0:*\n"
    local["https"] = {"address": IPV4, "error": "ConnectionRefusedError: refused"}


def caddy_binary_not_executable(facts, local):
    facts["caddy"]["binary_file"]["mode"] = "0750"
    facts["units"][layout.CADDY_UNIT].update(
        ActiveState="failed", SubState="failed", Result="exit-code", ExecMainStatus="203"
    )
    refused = {"error": "ConnectionRefusedError: refused", "refused": True}
    facts["caddy_https"] = dict(refused)
    facts["caddy_http"] = dict(refused)
    facts["listening"]["output"] = "LISTEN 0 4096 127.0.0.1:5000 0.0.0.0:*\n"
    local["https"] = {"address": IPV4, "error": "ConnectionRefusedError: refused"}


def timer_disabled(facts, local):
    facts["units"][layout.AUTOUPDATE_TIMER].update(
        ActiveState="inactive", SubState="dead", UnitFileState="disabled"
    )


def timer_not_enabled(facts, local):
    facts["units"][layout.AUTOUPDATE_TIMER]["UnitFileState"] = "disabled"


def label_missing(facts, local):
    del facts["container"]["labels"][layout.AUTOUPDATE_LABEL]


def dns_points_elsewhere(facts, local):
    local["resolution"] = {"ipv4": [OTHER_IPV4], "ipv6": [], "error": None}
    local["https"] = {"address": OTHER_IPV4, "error": "TimeoutError: timed out"}


def aaaa_points_elsewhere(facts, local):
    local["resolution"] = {"ipv4": [IPV4], "ipv6": ["2001:db8:99::1"], "error": None}


def dns_missing(facts, local):
    local["resolution"] = {"ipv4": [], "ipv6": [], "error": "Name or service not known"}
    local["https"] = None
    facts["resolution"] = {"addresses": [], "error": "gaierror"}


def cloud_init_error(facts, local):
    facts["cloud_init"] = {
        "status_rc": 1,
        "status": {"status": "error", "detail": "('scripts_user', RuntimeError('Runparts'))"},
        "result_errors": ["('scripts_user', RuntimeError('Runparts: 1 failures in 1 commands'))"],
        "result_error_count": 1,
        "boot_finished": True,
    }


def bootstrap_failed(facts, local):
    cloud_init_error(facts, local)
    facts["bootstrap"].update(result="failed", reason="the Caddyfile does not validate")


def bootstrap_missing(facts, local):
    facts["bootstrap"] = {"exists": False}


def ufw_443_closed(facts, local):
    facts["ufw"]["output"] = "\n".join(
        line for line in UFW_HEALTHY.splitlines() if not line.startswith("443/tcp")
    )
    local["https"] = {"address": IPV4, "error": "TimeoutError: timed out"}


def ufw_80_denied_first(facts, local):
    facts["ufw"]["output"] = UFW_HEALTHY.replace(
        "22/tcp                     ALLOW IN    Anywhere                   # zot-hetzner ssh",
        "22/tcp                     ALLOW IN    Anywhere\n"
        "80/tcp                     DENY IN     Anywhere",
    )


def cloud_firewall_443_missing(facts, local):
    local["cloud_firewall"]["firewalls"][0]["rules"] = FIREWALL_RULES[:2]
    local["https"] = {"address": IPV4, "error": "TimeoutError: timed out"}


def certificate_expiring(facts, local):
    facts["caddy_https"]["certificate_der"] = make_certificate(not_after=NOW + 2 * DAY)


def certificate_expired(facts, local):
    facts["caddy_https"]["certificate_der"] = make_certificate(not_after=NOW - DAY)
    facts["caddy_tls_verify"] = {"verified": False, "error": "certificate has expired"}
    local["https"] = {"address": IPV4, "verify_error": "certificate has expired"}


def certificate_other_name(facts, local):
    facts["caddy_https"]["certificate_der"] = make_certificate(domain="old.example.com")
    facts["caddy_tls_verify"] = {"verified": False, "error": "Hostname mismatch"}
    local["https"] = {"address": IPV4, "verify_error": "Hostname mismatch"}


def no_certificate(facts, local):
    facts["caddy_https"] = {"error": "SSLError: tlsv1 alert internal error"}
    facts["caddy_tls_verify"] = {"verified": None, "error": "SSLError"}
    local["https"] = {"address": IPV4, "error": "SSLError: tlsv1 alert internal error"}


def auth_off(facts, local):
    facts["zot_http"]["status"] = 200
    facts["zot_http"]["www_authenticate"] = None
    facts["caddy_https"]["status"] = 200
    local["https"] = {"address": IPV4, "status": 200}


def zot_published_everywhere(facts, local):
    facts["container"]["ports"][0]["host_ip"] = ""
    facts["listening"]["output"] += "LISTEN 0 4096 0.0.0.0:5000 0.0.0.0:*\n"


def disk_full(facts, local):
    facts["disks"]["/"]["available_bytes"] = 300 * 1024**2


def memory_exhausted(facts, local):
    facts["memory"]["available_bytes"] = 100 * 1024**2


def ntp_off(facts, local):
    facts["timedate"]["properties"].update(NTP="no", NTPSynchronized="no")


def clock_far_off(facts, local):
    facts["started_at"] = NOW + 600
    facts["finished_at"] = NOW + 601


def htpasswd_md5(facts, local):
    facts["htpasswd"]["schemes"] = {"bcrypt": 1, "apr1": 1, "sha1": 0, "other": 0}


def zot_config_invalid(facts, local):
    facts["zot_config"] = {"exists": True, "mode": "0644", "parse_error": "line 4 column 3: x"}
    facts["zot_verify"] = {"ran": True, "rc": 1, "message": "invalid character"}
    facts["s3"] = {"attempted": False, "reason": "storage driver is unset"}


def zot_verify_rejects(facts, local):
    facts["zot_verify"] = {"ran": True, "rc": 1, "message": "storage rootDirectory missing"}


def zot_skipped_for_missing_htpasswd(facts, local):
    facts["htpasswd"] = {"exists": False}
    facts["units"][layout.ZOT_UNIT].update(
        ActiveState="inactive", SubState="dead", ConditionResult="no"
    )
    facts["container"] = {"found": False}
    facts["zot_http"] = {"error": "refused", "refused": True}
    facts["caddy_https"]["status"] = 502
    local["https"] = {"address": IPV4, "status": 502}


CASES: list[tuple[str, Mutation, str, str]] = [
    # (case, mutation, the one failing check, text in its fix)
    ("zot stopped", zot_stopped, "zot-service", "inv restart --service zot"),
    (
        "wrong S3 secret, zot down",
        zot_crash_loop_wrong_secret,
        "s3-bucket",
        "inv set-s3-credentials",
    ),
    ("wrong S3 secret, zot up", wrong_secret_zot_running, "s3-bucket", "inv set-s3-credentials"),
    ("unknown access key", unknown_access_key, "s3-bucket", "inv set-s3-credentials"),
    ("missing bucket", missing_bucket, "s3-bucket", "inv set-s3-credentials --bucket NAME"),
    ("S3 endpoint unreachable", endpoint_unreachable, "s3-bucket", "getent hosts"),
    ("credentials missing", credentials_missing, "s3-credentials", "inv set-s3-credentials"),
    ("credentials readable", credentials_readable, "s3-credentials", "chmod 0600"),
    ("broken Caddyfile", broken_caddyfile, "caddy-config", "caddy validate --config"),
    ("broken Caddyfile, restarted", broken_caddyfile_after_restart, "caddy-config", "validate"),
    ("caddy binary 0750", caddy_binary_not_executable, "caddy-service", "chmod 0755"),
    ("timer disabled", timer_disabled, "auto-update", "systemctl enable --now podman-auto-update"),
    ("timer not enabled", timer_not_enabled, "auto-update", "systemctl enable --now"),
    (
        "autoupdate label missing",
        label_missing,
        "auto-update",
        "inv deploy (it writes the rendered /etc/systemd/system/zot.service back",
    ),
    ("A record elsewhere", dns_points_elsewhere, "dns", f"A {DOMAIN} -> {IPV4}"),
    ("AAAA record elsewhere", aaaa_points_elsewhere, "dns", f"AAAA {DOMAIN} -> {IPV6}"),
    ("no DNS record", dns_missing, "dns", f"A {DOMAIN} -> {IPV4}"),
    ("cloud-init error", cloud_init_error, "cloud-init", "cloud-init-output.log"),
    ("bootstrap failed", bootstrap_failed, "bootstrap", layout.BOOTSTRAP_SCRIPT),
    ("bootstrap missing", bootstrap_missing, "bootstrap", layout.BOOTSTRAP_SCRIPT),
    ("ufw 443 closed", ufw_443_closed, "ufw", "ufw allow 443/tcp"),
    ("ufw denies 80 first", ufw_80_denied_first, "ufw", "ufw allow 80/tcp"),
    ("cloud firewall 443", cloud_firewall_443_missing, "cloud-firewall", "--port 443"),
    ("certificate expiring", certificate_expiring, "certificate", "inv logs --source caddy"),
    ("certificate expired", certificate_expired, "certificate", "inv logs --source caddy"),
    (
        "certificate other name",
        certificate_other_name,
        "certificate",
        "inv deploy (it writes the rendered /etc/caddy/Caddyfile back",
    ),
    ("no certificate", no_certificate, "certificate", "inv logs --source caddy"),
    (
        "authentication off",
        auth_off,
        "zot-http",
        "inv deploy (it writes the rendered /etc/zot/config.json back",
    ),
    (
        "zot published publicly",
        zot_published_everywhere,
        "zot-exposure",
        "rendered /etc/systemd/system/zot.service",
    ),
    ("disk full", disk_full, "disk", "apt-get clean"),
    ("memory exhausted", memory_exhausted, "memory", "hcloud server change-type"),
    ("NTP off", ntp_off, "clock", "timedatectl set-ntp true"),
    ("clock far off", clock_far_off, "clock", "timedatectl set-ntp true"),
    ("htpasswd with MD5", htpasswd_md5, "htpasswd", "inv rotate-password"),
    ("zot config invalid JSON", zot_config_invalid, "zot-config", "inv deploy"),
    (
        "zot verify rejects",
        zot_verify_rejects,
        "zot-config",
        "inv deploy (it writes the rendered /etc/zot/config.json back",
    ),
    (
        "zot skipped: no htpasswd",
        zot_skipped_for_missing_htpasswd,
        "htpasswd",
        "inv rotate-password",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "check", "fix"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_one_broken_thing_fails_one_check(mutate: Mutation, check: str, fix: str):
    facts = healthy_facts()
    local = healthy_local().__dict__.copy()
    local = copy.deepcopy(local)
    mutate(facts, local)
    results = judge(facts, LocalFacts(**local))
    failing = statuses(results, "fail")
    assert failing == {check}, {name: results[name].evidence for name in failing}
    result = results[check]
    assert fix in result.fix
    assert result.cause
    assert result.where in ("local", "server", "dns")


def test_rewrite_fix_points_at_deploy():
    facts = healthy_facts()
    local = copy.deepcopy(healthy_local().__dict__)
    auth_off(facts, local)
    fix = judge(facts, LocalFacts(**local))["zot-http"].fix
    assert fix == (
        "inv deploy (it writes the rendered /etc/zot/config.json back and restarts what uses it)"
    )


def test_follow_on_failures_name_their_root():
    facts = healthy_facts()
    local = copy.deepcopy(healthy_local().__dict__)
    zot_stopped(facts, local)
    results = judge(facts, LocalFacts(**local))
    assert results["zot-http"].status == "skip"
    assert results["zot-http"].after == ("zot-service",)
    assert results["https-on-server"].after == ("zot-service",)
    assert results["https-from-here"].after == ("zot-service",)


def test_root_cause_propagates_through_two_levels():
    facts = healthy_facts()
    local = copy.deepcopy(healthy_local().__dict__)
    zot_crash_loop_wrong_secret(facts, local)
    results = judge(facts, LocalFacts(**local))
    assert results["zot-service"].after == ("s3-bucket",)
    assert results["zot-http"].after == ("s3-bucket",)


def test_dns_mismatch_fix_names_record_and_address():
    facts = healthy_facts()
    local = copy.deepcopy(healthy_local().__dict__)
    dns_points_elsewhere(facts, local)
    result = judge(facts, LocalFacts(**local))["dns"]
    assert OTHER_IPV4 in result.evidence
    assert result.where == "dns"
    assert (
        result.fix
        == f"set the records A {DOMAIN} -> {IPV4}, AAAA {DOMAIN} -> {IPV6} and remove the others"
    )


def test_dns_fix_for_server_without_ipv6():
    facts = healthy_facts()
    facts["addresses"]["addresses"] = [
        entry for entry in facts["addresses"]["addresses"] if entry["address"] != IPV6
    ]
    local = replace(healthy_local(), resolution={"ipv4": [OTHER_IPV4], "ipv6": [], "error": None})
    result = judge(facts, local, recorded_addresses=frozenset({IPV4}))["dns"]
    assert result.status == "fail"
    assert result.fix == f"set the records A {DOMAIN} -> {IPV4} and remove the others"


def test_records_of_other_deployment_servers_are_accepted():
    local = replace(
        healthy_local(), resolution={"ipv4": [IPV4, OTHER_IPV4], "ipv6": [], "error": None}
    )
    results = judge(
        healthy_facts(), local, deployment_addresses=frozenset({IPV4, IPV6, OTHER_IPV4})
    )
    assert results["dns"].status == "ok"


WARNINGS: list[tuple[str, Mutation, str, str]] = [
    (
        "ufw inactive",
        lambda f, _local: f["ufw"].update(output="Status: inactive\n"),
        "ufw",
        "bash /usr/local/lib/zot-hetzner/bootstrap.sh",
    ),
    (
        "certificate within 14 days",
        lambda f, _local: f["caddy_https"].update(
            certificate_der=make_certificate(not_after=NOW + 10 * DAY)
        ),
        "certificate",
        "inv logs --source caddy",
    ),
    (
        "staging certificate",
        lambda f, _local: (
            f["caddy_https"].update(
                certificate_der=make_certificate(issuer_cn="(STAGING) Ersatz Edamame E1")
            ),
            f["caddy_tls_verify"].update(verified=False, error="unable to get local issuer"),
        ),
        "certificate",
        "acme_staging: false",
    ),
    (
        "zot crash loop",
        lambda f, _local: f["units"][layout.ZOT_UNIT].update(NRestarts="5"),
        "zot-service",
        "inv logs --source zot",
    ),
    (
        "errors in zot's log",
        lambda f, _local: f["logs"]["zot"][1].update(
            errors=3, sample="s3 request failed: AccessDenied", sample_time=NOW - 60
        ),
        "zot-logs",
        "inv logs --source zot-log",
    ),
    (
        "caddy 5xx answers",
        lambda f, _local: f["logs"]["caddy_access"].update(server_errors=4),
        "caddy-logs",
        "inv logs --source access",
    ),
    (
        "NTP not synchronised",
        lambda f, _local: f["timedate"]["properties"].update(NTPSynchronized="no"),
        "clock",
        "systemctl restart systemd-timesyncd",
    ),
    (
        "change lock held",
        lambda f, _local: f.update(
            lock={
                "exists": True,
                "mtime": NOW - 7200,
                "owner": {
                    "operator": "ann@laptop",
                    "pid": "4242",
                    "task": "upgrade-caddy",
                    "since": "2025-12-31T22:00:00Z",
                },
            }
        ),
        "change-lock",
        "--break-lock",
    ),
    (
        "reboot pending",
        lambda f, _local: f.update(reboot={"required": True, "packages": ["linux-image-amd64"]}),
        "reboot",
        "systemctl reboot",
    ),
    (
        "other unit failed",
        lambda f, _local: f.update(failed_units={"units": ["apt-daily.service", "zot.service"]}),
        "failed-units",
        "systemctl status apt-daily.service",
    ),
    (
        "OOM kills",
        lambda f, _local: f["memory"].update(oom_kills_since_boot=2),
        "memory",
        "out of memory",
    ),
    (
        "auto-update last run failed",
        lambda f, _local: f["units"][layout.AUTOUPDATE_SERVICE].update(Result="exit-code"),
        "auto-update",
        "journalctl -u podman-auto-update.service",
    ),
    (
        "probe without root",
        lambda f, _local: f.update(uid=1000),
        "probe",
        "deployment.ssh.user",
    ),
    (
        "htpasswd world-readable",
        lambda f, _local: f["htpasswd"].update(mode="0644"),
        "htpasswd",
        "chmod 0600",
    ),
    (
        "disk getting full",
        lambda f, _local: f["disks"]["/"].update(available_bytes=3 * 1024**3),
        "disk",
        "podman image prune",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "check", "fix"),
    [case[1:] for case in WARNINGS],
    ids=[case[0] for case in WARNINGS],
)
def test_one_degraded_thing_warns_one_check(mutate: Mutation, check: str, fix: str):
    facts = healthy_facts()
    local = copy.deepcopy(healthy_local().__dict__)
    mutate(facts, local)
    results = judge(facts, LocalFacts(**local))
    assert statuses(results, "fail") == set()
    assert statuses(results, "warn") == {check}
    assert fix in results[check].fix


def test_log_sample_is_shown_in_evidence():
    facts = healthy_facts()
    facts["logs"]["zot"][1].update(errors=3, sample="s3: AccessDenied", sample_time=NOW - 5)
    evidence = judge(facts)["zot-logs"].evidence
    assert "3 error lines" in evidence
    assert "latest: s3: AccessDenied" in evidence
    assert evidence.startswith("last 24 h: ")


def test_container_clock_is_trusted():
    facts = healthy_facts()
    facts["system"]["container"] = "systemd-nspawn"
    facts["timedate"] = {"rc": 1, "error": "Failed to query server"}
    result = judge(facts)["clock"]
    assert result.status == "ok"
    assert "systemd-nspawn" in result.evidence


def test_missing_fact_section_is_reported_not_raised():
    facts = healthy_facts()
    facts["ufw"] = {"probe_error": "OSError: boom"}
    facts["disks"] = {"probe_error": "OSError: boom"}
    results = judge(facts)
    assert results["ufw"].status == "warn"
    assert results["disk"].status == "skip"


def test_crashing_check_becomes_failure_of_that_check():
    def broken(inputs):
        raise KeyError("surprise")

    results = run_checks(
        Inputs(healthy_facts(), healthy_local(), expectations()),
        (Check("a", lambda inputs: ok("fine")), Check("b", broken)),
    )
    assert [r.status for r in results] == ["ok", "fail"]
    assert "KeyError" in results[1].evidence


def test_dependency_cycle_is_rejected():
    with pytest.raises(ValueError, match="cycle"):
        run_checks(
            Inputs(healthy_facts(), healthy_local(), expectations()),
            (
                Check("a", lambda inputs: fail("x"), ("b",)),
                Check("b", lambda inputs: fail("y"), ("a",)),
            ),
        )


def test_independent_failure_is_not_hidden_by_warning_dependency():
    results = run_checks(
        Inputs(healthy_facts(), healthy_local(), expectations()),
        (Check("a", lambda inputs: ok("fine")), Check("b", lambda inputs: fail("bad"), ("a",))),
    )
    assert results[1].status == "fail"
    assert results[1].after == ()


def test_change_lock_names_its_holder():
    facts = healthy_facts()
    facts["lock"] = {
        "exists": True,
        "mtime": NOW - 60,
        "owner": {"operator": "ann@laptop", "pid": "7", "task": "deploy", "since": "today"},
    }
    evidence = judge(facts)["change-lock"].evidence
    assert "ann@laptop (task deploy, pid 7) since today" in evidence
    assert evidence.endswith("60 s old")


def test_change_lock_without_owner_file():
    facts = healthy_facts()
    facts["lock"] = {"exists": True, "mtime": NOW, "owner": None}
    assert "unknown owner" in judge(facts)["change-lock"].evidence
