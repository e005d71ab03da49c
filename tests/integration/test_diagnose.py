"""diagnose on a registry deployed to a local Debian 12 host: healthy, then one thing broken at a time.

Each test breaks one thing on the running host the way it breaks on a real
server and runs the same code as `inv diagnose`. It asserts that exactly the
matching check fails with the matching fix. Then it repairs the host and
asserts that no check fails any more.

The host's network namespace contains only `lo`, so the server's public
address is stood in for by 192.0.2.10 (a documentation address) on the
guest's `lo`. The domain's DNS answer comes from the test's resolver.
HTTPS from here goes to the loopback forwarder that deploy recorded, never
to the resolved address.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import yaml

from ops import layout
from ops.converge import forget_host_key
from ops.diagnose import remote, report, run
from ops.diagnose.result import CheckResult
from ops.remote.connect import connect_for, select_targets

pytestmark = pytest.mark.integration

SERVER_ADDRESS = "192.0.2.10"
OTHER_ADDRESS = "198.51.100.7"
# Seconds a repaired service gets to respond again.
RECOVERY_TIMEOUT = 120


def no_traffic_to_resolved_addresses(address: str) -> tuple[str, int]:
    raise AssertionError(f"diagnose tried to reach {address} instead of the recorded endpoint")


def diagnose(deployment, resolve_to: str = SERVER_ADDRESS) -> dict[str, CheckResult]:
    """Run diagnose on the deployment's host; return its results by check name."""
    settings = deployment.settings
    targets = select_targets(settings.name, settings.ssh.port, None)
    env = run.Environment(
        connect=lambda target: connect_for(settings, target),
        resolver=lambda domain: {"ipv4": [resolve_to], "ipv6": [], "error": None},
        https_endpoint=no_traffic_to_resolved_addresses,
    )
    reports = run.diagnose(settings, targets, env)
    print(report.render_text(reports))
    assert len(reports) == 1
    return {result.name: result for result in reports[0].results}


def failing(results: dict[str, CheckResult]) -> dict[str, str]:
    return {name: r.evidence for name, r in results.items() if r.status == "fail"}


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def zot_answers(host) -> bool:
    status = host.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:5000/v2/"],
        check=False,
    ).stdout
    return status == "401"


def caddy_answers(host) -> bool:
    status = host.run(
        [
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            "registry.test:443:127.0.0.1",
            "https://registry.test/v2/",
        ],
        check=False,
    ).stdout
    return status == "401"


@pytest.fixture(scope="module")
def deployment(local_deployment):
    host = local_deployment.host
    present = host.run(["ip", "-o", "addr", "show", "dev", "lo"]).stdout
    if SERVER_ADDRESS not in present:
        host.run(["ip", "addr", "add", f"{SERVER_ADDRESS}/32", "dev", "lo"])
    return local_deployment


@pytest.fixture
def healthy_afterwards(deployment) -> Iterator[None]:
    """Assert after the test (and its repair) that diagnose finds no failure again."""
    yield
    assert failing(diagnose(deployment)) == {}


def assert_only_failure(results: dict[str, CheckResult], check: str, fix: str) -> CheckResult:
    assert failing(results).keys() == {check}, failing(results)
    result = results[check]
    assert fix in result.fix, result.fix
    assert result.cause
    return result


# --- healthy -------------------------------------------------------------------------


def test_healthy_host_passes(deployment):
    results = diagnose(deployment)
    assert failing(results) == {}
    not_ok = {name: r.evidence for name, r in results.items() if r.status != "ok"}
    # No HCLOUD_TOKEN here, so the Cloud Firewall is not checked.
    assert set(not_ok) <= {"cloud-firewall"}, not_ok
    assert results["cloud-firewall"].status == "skip"


def test_healthy_evidence_is_real(deployment):
    results = diagnose(deployment)
    assert "401" in results["zot-http"].evidence
    assert "401" in results["https-on-server"].evidence
    assert "recorded endpoint" in results["https-from-here"].evidence
    assert "HTTP 200" in results["s3-bucket"].evidence
    assert SERVER_ADDRESS in results["dns"].evidence
    assert "Caddy's internal CA" in results["certificate"].evidence
    assert "registry" in results["auto-update"].evidence


def test_probe_output_has_no_secret(deployment):
    settings = deployment.settings
    (target,) = select_targets(settings.name, settings.ssh.port, None)
    conn = connect_for(settings, target)
    try:
        facts = remote.run_probe(conn, remote.probe_params(settings.domain))
    finally:
        conn.close()
    text = json.dumps(facts)
    for secret in deployment.stack.secret_environment().values():
        assert secret.reveal() not in text
    for user in ("admin", "ci", "viewer"):
        assert deployment.password(user) not in text


def test_json_report_parses(deployment):
    settings = deployment.settings
    targets = select_targets(settings.name, settings.ssh.port, None)
    env = run.Environment(
        connect=lambda target: connect_for(settings, target),
        resolver=lambda domain: {"ipv4": [SERVER_ADDRESS], "ipv6": [], "error": None},
        https_endpoint=no_traffic_to_resolved_addresses,
    )
    document = json.loads(report.render_json(run.diagnose(settings, targets, env)))
    assert document["exit_code"] == 0
    assert len(document["hosts"][0]["checks"]) > 25


# --- one broken thing at a time --------------------------------------------------------


def test_zot_stopped(deployment, healthy_afterwards):
    host = deployment.host
    host.run(["systemctl", "stop", layout.ZOT_UNIT])
    try:
        results = diagnose(deployment)
        assert_only_failure(results, "zot-service", "inv restart --service zot")
        assert results["zot-http"].after == ("zot-service",)
    finally:
        host.run(["systemctl", "start", layout.ZOT_UNIT])
        wait_until(lambda: zot_answers(host), RECOVERY_TIMEOUT, "zot answering again")


def test_broken_caddyfile(deployment, healthy_afterwards):
    host = deployment.host
    original = host.run(["cat", layout.CADDYFILE]).stdout
    host.run(
        ["sh", "-c", f"printf '\\nbroken-directive {{\\n' >> {layout.CADDYFILE}"],
    )
    try:
        result = assert_only_failure(
            diagnose(deployment), "caddy-config", "caddy validate --config"
        )
        assert "Caddyfile" in result.evidence
    finally:
        host.run(["tee", layout.CADDYFILE], input_text=original)


def test_wrong_s3_secret(deployment, healthy_afterwards):
    host = deployment.host
    original = host.run(["cat", layout.ZOT_CREDENTIALS]).stdout
    key_id = next(
        line.split("=", 1)[1]
        for line in original.splitlines()
        if line.startswith("AWS_ACCESS_KEY_ID=")
    )
    host.run(
        ["tee", layout.ZOT_CREDENTIALS],
        input_text=f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY=not-the-right-secret\n",
    )
    try:
        result = assert_only_failure(diagnose(deployment), "s3-bucket", "inv set-s3-credentials")
        assert "SignatureDoesNotMatch" in result.evidence
    finally:
        host.run(["tee", layout.ZOT_CREDENTIALS], input_text=original)


def test_unknown_s3_key(deployment, healthy_afterwards):
    host = deployment.host
    original = host.run(["cat", layout.ZOT_CREDENTIALS]).stdout
    host.run(
        ["tee", layout.ZOT_CREDENTIALS],
        input_text="AWS_ACCESS_KEY_ID=AKIAUNKNOWNKEY000000\nAWS_SECRET_ACCESS_KEY=whatever-it-is\n",
    )
    try:
        result = assert_only_failure(diagnose(deployment), "s3-bucket", "inv set-s3-credentials")
        assert "InvalidAccessKeyId" in result.evidence
    finally:
        host.run(["tee", layout.ZOT_CREDENTIALS], input_text=original)


def test_credentials_readable_by_others(deployment, healthy_afterwards):
    host = deployment.host
    host.run(["chmod", "0644", layout.ZOT_CREDENTIALS])
    try:
        assert_only_failure(diagnose(deployment), "s3-credentials", "chmod 0600")
    finally:
        host.run(["chmod", "0600", layout.ZOT_CREDENTIALS])


def test_timer_disabled(deployment, healthy_afterwards):
    host = deployment.host
    host.run(["systemctl", "disable", "--now", layout.AUTOUPDATE_TIMER])
    try:
        assert_only_failure(
            diagnose(deployment),
            "auto-update",
            f"systemctl enable --now {layout.AUTOUPDATE_TIMER}",
        )
    finally:
        host.run(["systemctl", "enable", "--now", layout.AUTOUPDATE_TIMER])


def test_dns_points_elsewhere(deployment):
    result = assert_only_failure(
        diagnose(deployment, resolve_to=OTHER_ADDRESS),
        "dns",
        f"A registry.test -> {SERVER_ADDRESS}",
    )
    assert OTHER_ADDRESS in result.evidence
    assert result.where == "dns"


def test_ufw_443_closed(deployment, healthy_afterwards):
    host = deployment.host
    host.run(["ufw", "delete", "allow", "443/tcp"])
    try:
        result = assert_only_failure(diagnose(deployment), "ufw", "ufw allow 443/tcp")
        assert result.where == "server"
    finally:
        host.run(["ufw", "allow", "443/tcp"])


def test_htpasswd_with_md5_entry(deployment, healthy_afterwards):
    host = deployment.host
    original = host.run(["cat", layout.ZOT_HTPASSWD]).stdout
    host.run(
        [
            "sh",
            "-c",
            f"echo 'legacy:$apr1$abcdefgh$0123456789abcdefghijkl' >> {layout.ZOT_HTPASSWD}",
        ]
    )
    try:
        assert_only_failure(diagnose(deployment), "htpasswd", "inv rotate-password")
    finally:
        host.run(["tee", layout.ZOT_HTPASSWD], input_text=original)


def test_caddy_binary_not_executable(deployment, healthy_afterwards):
    host = deployment.host
    host.run(["chmod", "0750", layout.CADDY_BINARY])
    host.run(["systemctl", "restart", layout.CADDY_UNIT], check=False)
    try:
        assert_only_failure(
            diagnose(deployment), "caddy-service", f"chmod 0755 {layout.CADDY_BINARY}"
        )
    finally:
        host.run(["chmod", "0755", layout.CADDY_BINARY])
        host.run(["systemctl", "reset-failed", layout.CADDY_UNIT], check=False)
        host.run(["systemctl", "restart", layout.CADDY_UNIT])
        wait_until(lambda: caddy_answers(host), RECOVERY_TIMEOUT, "Caddy answering again")


def test_change_lock_held_warns(deployment):
    host = deployment.host
    owner = {
        "operator": "ann@laptop",
        "pid": 4242,
        "task": "upgrade-caddy",
        "since": "x",
        "token": "t",
    }
    host.run(["mkdir", "-p", layout.LOCK_DIR])
    host.run(["tee", f"{layout.LOCK_DIR}/owner"], input_text=json.dumps(owner))
    try:
        results = diagnose(deployment)
        assert failing(results) == {}
        assert results["change-lock"].status == "warn"
        assert "ann@laptop" in results["change-lock"].evidence
        assert "--break-lock" in results["change-lock"].fix
    finally:
        host.run(["rm", "-rf", layout.LOCK_DIR])


def test_cloud_init_error_after_reboot(deployment):
    """Reboot into a new cloud-init instance whose user data also runs a failing command.

    It runs last: the host keeps the failed cloud-init run afterwards.
    """
    host = deployment.host
    seed = host.root / "var/lib/cloud/seed/nocloud"
    user_data = yaml.safe_load((seed / "user-data").read_text())
    # cloud-init runs the runcmd entries as one script whose exit status is the last
    # command's, so the failing step goes after the bootstrap.
    user_data["runcmd"].append(["sh", "-c", "echo diagnose test step fails >&2; exit 3"])
    (seed / "user-data").write_text("#cloud-config\n" + yaml.safe_dump(user_data))
    meta = (seed / "meta-data").read_text().splitlines()
    meta = [
        f"instance-id: diagnose-{int(time.time())}" if line.startswith("instance-id:") else line
        for line in meta
    ]
    (seed / "meta-data").write_text("\n".join(meta) + "\n")
    host.reboot(timeout=120)
    host.wait_for_ssh(120)
    # A new cloud-init instance makes new SSH host keys, as a rebuilt server has.
    (target,) = select_targets(deployment.settings.name, deployment.settings.ssh.port, None)
    forget_host_key(deployment.settings, target)
    host.wait_for_cloud_init(900)
    wait_until(lambda: zot_answers(host), RECOVERY_TIMEOUT, "zot answering after the reboot")
    wait_until(lambda: caddy_answers(host), RECOVERY_TIMEOUT, "Caddy answering after the reboot")
    host.run(["ip", "addr", "replace", f"{SERVER_ADDRESS}/32", "dev", "lo"])

    results = diagnose(deployment)
    result = assert_only_failure(results, "cloud-init", "cloud-init-output.log")
    assert "error" in result.evidence
    assert results["bootstrap"].status == "ok"
