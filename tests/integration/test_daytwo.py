"""The day-two tasks against a registry deployed on a local Debian 12 host.

The tasks run as a user runs them: Invoke task functions with the
deployment's settings, reaching the host over SSH through the servers and
pinned host key that deploy recorded. Every changing task runs twice, and
the second run reports no change, except rotations and restarts, which
always change. A dry run leaves the host as it was. Each fault leaves the
host working: a config zot cannot use, a corrupt or mis-summed Caddy
download, a dropped SSH session, a held lock. Each test ends with the
registry healthy.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from invoke import Config, Context
from invoke.exceptions import Exit

from ops import layout
from ops.daytwo import tasks as daytwo
from ops.sandbox.standins.caddy_releases import CaddyFault

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deployment(local_deployment):
    return local_deployment


@pytest.fixture
def ctx(deployment, monkeypatch: pytest.MonkeyPatch) -> Context:
    """An Invoke context with the deployment's settings and its S3 keys in the environment."""
    for name, secret in deployment.stack.secret_environment().items():
        monkeypatch.setenv(name, secret.reveal())
    for name in (
        "ZOT_NEW_PASSWORD",
        "ZOT_PASSWORD_ADMIN",
        "ZOT_PASSWORD_CI",
        "ZOT_HETZNER_SECRETS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("ops.prompt.interactive", lambda: False)
    raw = deployment.settings.model_dump(mode="json")
    return Context(config=Config(overrides={"deployment": raw}))


@pytest.fixture(autouse=True)
def healthy_after(deployment) -> Iterator[None]:
    """Every test must leave the registry serving: status passes."""
    yield
    raw = deployment.settings.model_dump(mode="json")
    daytwo.status(Context(config=Config(overrides={"deployment": raw})))


def run_task(capsys, task, *args, **kwargs) -> str:
    task(*args, **kwargs)
    return capsys.readouterr().out


def run_failing(capsys, task, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(Exit) as raised:
        task(*args, **kwargs)
    assert raised.value.code == 1
    return capsys.readouterr().out, str(raised.value.message)


def guest_file(deployment, path: str) -> str:
    return deployment.host.run(["cat", path]).stdout


def unit_started(deployment, unit: str) -> str:
    """When UNIT last became active (monotonic µs); a restart changes it."""
    return deployment.host.run(
        ["systemctl", "show", "--property=ActiveEnterTimestampMonotonic", "--value", unit]
    ).stdout.strip()


class ProcessWatch:
    """Records the guest's process list (`ps -eo args`) every 20 ms while a task runs."""

    def __init__(self, deployment) -> None:
        self.host = deployment.host
        self.thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        script = "for i in $(seq 1500); do ps -eo args >> /run/zh-ps.log; sleep 0.02; [ -e /run/zh-ps.stop ] && break; done"
        self.host.run(["sh", "-c", script], timeout=120)

    def __enter__(self) -> ProcessWatch:
        self.host.run(["rm", "-f", "/run/zh-ps.log", "/run/zh-ps.stop"])
        self.thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self.host.run(["touch", "/run/zh-ps.stop"])
        self.thread.join(120)

    def text(self) -> str:
        return self.host.run(["cat", "/run/zh-ps.log"]).stdout


def test_status_reports_healthy(ctx, capsys) -> None:
    output = run_task(capsys, daytwo.status, ctx)
    assert "zot.service: active/running" in output
    assert "caddy.service: active/running" in output
    assert "(expected 401)" in output
    assert "change lock: free" in output


def test_s3_same_keys_no_change(ctx, deployment, capsys) -> None:
    started = unit_started(deployment, layout.ZOT_UNIT)
    output = run_task(capsys, daytwo.set_s3_credentials, ctx)
    assert ": no change" in output.splitlines()[-2] or "no change" in output
    assert f"{layout.ZOT_CREDENTIALS}: no change" in output
    assert unit_started(deployment, layout.ZOT_UNIT) == started


def test_s3_bucket_switch_twice(ctx, deployment, capsys) -> None:
    deployment.stack.s3.client().create_bucket(
        Bucket="zot-sandbox-second", CreateBucketConfiguration={"LocationConstraint": "fsn1"}
    )
    with ProcessWatch(deployment) as watch:
        first = run_task(capsys, daytwo.set_s3_credentials, ctx, bucket="zot-sandbox-second")
    assert "changed" in first
    assert "zot reads its storage" in first
    driver = json.loads(guest_file(deployment, layout.ZOT_CONFIG))["storage"]["storageDriver"]
    assert driver["bucket"] == "zot-sandbox-second"
    second = run_task(capsys, daytwo.set_s3_credentials, ctx, bucket="zot-sandbox-second")
    assert "no change" in second
    back = run_task(capsys, daytwo.set_s3_credentials, ctx)
    assert "changed" in back
    secrets = [s.reveal() for s in deployment.stack.secret_environment().values()]
    for secret in secrets:
        assert secret not in first + second + back
        assert secret not in watch.text()
    assert deployment.password("admin") not in watch.text()


def test_s3_dry_run_changes_nothing(ctx, deployment, capsys, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-different-secret-key-for-the-dry-run")
    before = deployment.host.run(["sha256sum", layout.ZOT_CONFIG, layout.ZOT_CREDENTIALS]).stdout
    started = unit_started(deployment, layout.ZOT_UNIT)
    output = run_task(
        capsys, daytwo.set_s3_credentials, ctx, dry_run=True, bucket="elsewhere-bucket"
    )
    assert "would change" in output
    assert "(secret content changed)" in output
    assert '+      "bucket": "elsewhere-bucket",' in output
    assert "a-different-secret-key" not in output
    after = deployment.host.run(["sha256sum", layout.ZOT_CONFIG, layout.ZOT_CREDENTIALS]).stdout
    assert after == before
    assert unit_started(deployment, layout.ZOT_UNIT) == started


def test_s3_wrong_key_rolled_back(ctx, deployment, capsys, monkeypatch) -> None:
    before = deployment.host.run(["sha256sum", layout.ZOT_CONFIG, layout.ZOT_CREDENTIALS]).stdout
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-key-0000000000000000000000")
    output, message = run_failing(capsys, daytwo.set_s3_credentials, ctx)
    assert "back at its previous state" in output
    assert "wrong-secret-key" not in output + message
    after = deployment.host.run(["sha256sum", layout.ZOT_CONFIG, layout.ZOT_CREDENTIALS]).stdout
    assert after == before


def test_s3_unreachable_endpoint_rolled_back(ctx, deployment, capsys) -> None:
    before = deployment.host.run(["sha256sum", layout.ZOT_CONFIG, layout.ZOT_CREDENTIALS]).stdout
    output, _ = run_failing(capsys, daytwo.set_s3_credentials, ctx, endpoint="http://127.0.0.1:9")
    assert "Rolled back" in output
    after = deployment.host.run(["sha256sum", layout.ZOT_CONFIG, layout.ZOT_CREDENTIALS]).stdout
    assert after == before


def test_rotate_password_podman_login(ctx, deployment, capsys) -> None:
    old = deployment.password("admin")
    with ProcessWatch(deployment) as watch:
        output = run_task(capsys, daytwo.rotate_password, ctx, user="admin")
    new = deployment.password("admin")
    assert new != old
    assert output.count(new) == 1
    assert old not in output
    for text in (watch.text(), guest_file(deployment, layout.AUDIT_LOG)):
        assert new not in text
        assert old not in text
    client = deployment.client("rotate")
    rejected = client.login("admin", old)
    assert rejected.returncode != 0
    accepted = client.login("admin", new)
    assert accepted.returncode == 0, accepted.stderr
    again = run_task(capsys, daytwo.rotate_password, ctx, user="admin")
    assert "changed" in again
    assert client.login("admin", deployment.password("admin")).returncode == 0


def test_rotate_dry_run(ctx, deployment, capsys) -> None:
    before = guest_file(deployment, layout.ZOT_HTPASSWD)
    password = deployment.password("admin")
    output = run_task(capsys, daytwo.rotate_password, ctx, user="admin", dry_run=True)
    assert "would change" in output
    assert guest_file(deployment, layout.ZOT_HTPASSWD) == before
    assert deployment.password("admin") == password


def test_add_list_remove_user(ctx, deployment, capsys) -> None:
    added = run_task(capsys, daytwo.add_user, ctx, name="deployer", role="push")
    assert "changed" in added
    password = deployment.password("deployer")
    assert added.count(password) == 1
    again = run_task(capsys, daytwo.add_user, ctx, name="deployer", role="push")
    assert "no change" in again
    assert deployment.client("deployer").login("deployer", password).returncode == 0
    listed = run_task(capsys, daytwo.list_users, ctx)
    assert any(line.split()[:2] == ["deployer", "push"] for line in listed.splitlines())
    removed = run_task(capsys, daytwo.remove_user, ctx, name="deployer")
    assert "changed" in removed
    assert deployment.client("deployer-gone").login("deployer", password).returncode != 0
    assert "no change" in run_task(capsys, daytwo.remove_user, ctx, name="deployer")


def test_upgrade_caddy_faults_then_upgrade(ctx, deployment, capsys) -> None:
    caddy = deployment.stack.caddy
    current, newer = caddy.versions[0], caddy.versions[1]
    before = deployment.host.run(["sha256sum", layout.CADDY_BINARY]).stdout
    for fault, expected in (
        (CaddyFault.CORRUPT_TARBALL, "corrupt or was tampered with"),
        (CaddyFault.WRONG_CHECKSUM, "corrupt or was tampered with"),
        (CaddyFault.MISSING_CHECKSUM, "lists no checksum"),
        (CaddyFault.BROKEN_BINARY, "did not run"),
    ):
        caddy.inject_fault(fault, newer)
        try:
            output, _ = run_failing(capsys, daytwo.upgrade_caddy, ctx, version=newer)
        finally:
            caddy.reset()
        assert expected in output, fault
        assert "nothing was changed" in output
        assert deployment.host.run(["sha256sum", layout.CADDY_BINARY]).stdout == before
    dry = run_task(capsys, daytwo.upgrade_caddy, ctx, version=newer, dry_run=True)
    assert f"would upgrade caddy {current} -> {newer}" in dry
    assert deployment.host.run(["sha256sum", layout.CADDY_BINARY]).stdout == before

    output = run_task(capsys, daytwo.upgrade_caddy, ctx, version=newer)
    assert f"caddy {current} -> {newer}" in output
    assert deployment.host.run([layout.CADDY_BINARY, "version"]).stdout.startswith(f"v{newer} ")
    previous = deployment.host.run([layout.CADDY_PREVIOUS_BINARY, "version"]).stdout
    assert previous.startswith(f"v{current} ")
    assert deployment.host.run(["stat", "-c", "%a", layout.CADDY_BINARY]).stdout.strip() == "755"
    assert "no change" in run_task(capsys, daytwo.upgrade_caddy, ctx, version=newer)
    assert (
        deployment.client("after-upgrade").login("admin", deployment.password("admin")).returncode
        == 0
    )

    # --local-download fetches on this machine, where the release server has another port.
    local = deployment.settings.model_dump(mode="json")
    local["caddy"]["download_base"] = caddy.download_base()
    local_ctx = Context(config=Config(overrides={"deployment": local}))
    back = run_task(capsys, daytwo.upgrade_caddy, local_ctx, version=current, local_download=True)
    assert f"caddy {newer} -> {current}" in back
    assert "(downloaded here)" in back
    assert deployment.host.run(["sha256sum", layout.CADDY_BINARY]).stdout == before


def test_dropped_session_during_upgrade(ctx, deployment, capsys) -> None:
    caddy = deployment.stack.caddy
    current, newer = caddy.versions[0], caddy.versions[1]
    host = deployment.host
    killed: list[str] = []
    done = threading.Event()

    def kill_during_restart() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed and not done.is_set():
            if host.run(
                ["sh", "-c", "pgrep -f '^systemctl restart -- caddy.service' || true"]
            ).stdout.split():
                for pid in host.run(
                    ["sh", "-c", "pgrep -f '^sshd: root@notty' || true"]
                ).stdout.split():
                    host.run(["kill", pid], check=False)
                    killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_during_restart)
    killer.start()
    try:
        with pytest.raises(Exit):
            daytwo.upgrade_caddy(ctx, version=newer)
    finally:
        done.set()
        killer.join(150)
    output = capsys.readouterr().out
    assert killed, "the restart was never seen, so no session was killed"
    assert "SSH connection" in output
    assert "back at its previous state" in output
    assert host.run([layout.CADDY_BINARY, "version"]).stdout.startswith(f"v{current} ")
    lock_gone = host.run(["test", "-e", layout.LOCK_DIR], check=False).returncode != 0
    if not lock_gone:
        # The lock could not be released over the dead session: --break-lock clears it.
        run_task(capsys, daytwo.restart, ctx, service="caddy", break_lock=True)
    daytwo.status(ctx)


def test_held_lock_blocks_and_breaks(ctx, deployment, capsys) -> None:
    host = deployment.host
    owner = {
        "operator": "alice@laptop",
        "pid": 4242,
        "task": "upgrade-caddy",
        "since": "2025-01-06T10:00:00Z",
        "token": "t",
    }
    host.run(["mkdir", "-p", "-m", "0700", layout.LOCK_DIR])
    host.run(["sh", "-c", f"cat > {layout.LOCK_DIR}/owner"], input_text=json.dumps(owner))
    try:
        output, _ = run_failing(capsys, daytwo.restart, ctx, service="zot")
        assert (
            "held by alice@laptop (pid 4242, task upgrade-caddy) since 2025-01-06T10:00:00Z"
            in output
        )
        assert "--break-lock" in output
        broken = run_task(capsys, daytwo.restart, ctx, service="zot", break_lock=True)
        assert "breaking the change lock held by alice@laptop" in broken
    finally:
        host.run(["rm", "-rf", layout.LOCK_DIR])


def test_restart_always_changes(ctx, deployment, capsys) -> None:
    for _ in range(2):
        before = unit_started(deployment, layout.ZOT_UNIT)
        output = run_task(capsys, daytwo.restart, ctx, service="both")
        assert "changed" in output
        assert "check: Caddy responds" in output
        assert unit_started(deployment, layout.ZOT_UNIT) != before


def test_logs_and_audit(ctx, deployment, capsys) -> None:
    output = run_task(capsys, daytwo.logs, ctx, source="audit", lines=5)
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert entries
    assert {"time", "operator", "task", "result", "changes"} <= set(entries[-1])
    journal = run_task(capsys, daytwo.logs, ctx, source="zot", lines=20, since="1 hour ago")
    assert journal.strip()
    access = run_task(capsys, daytwo.logs, ctx, source="access", lines=3)
    assert access.strip()
    for text in (output, journal, access):
        assert deployment.password("admin") not in text


def test_auto_update_status_dry_run_and_run(ctx, deployment, capsys) -> None:
    status = run_task(capsys, daytwo.auto_update, ctx)
    assert "io.containers.autoupdate=registry is set on zot" in status
    assert "0 pending" in run_task(capsys, daytwo.auto_update, ctx, dry_run=True)
    deployment.stack.push_zot("v2")
    try:
        assert "1 pending" in run_task(capsys, daytwo.auto_update, ctx, dry_run=True)
        updated = run_task(capsys, daytwo.auto_update, ctx, run=True)
        assert "changed" in updated
        assert "no change" in run_task(capsys, daytwo.auto_update, ctx, run=True)
    finally:
        deployment.stack.push_zot("v1")
    journal = run_task(capsys, daytwo.auto_update, ctx, journal=True, lines=20)
    assert journal.strip()


def test_zot_config_that_does_not_start_rolled_back(deployment) -> None:
    """The path every zot config change takes, with a config.json zot cannot start with."""
    from ops.daytwo import common
    from ops.remote.change import DesiredFile, RolledBackError, apply_change, restart_step
    from ops.remote.connect import connect_for, select_targets
    from ops.remote.lock import change_lock

    settings = deployment.settings
    before = deployment.host.run(["sha256sum", layout.ZOT_CONFIG]).stdout
    (target,) = select_targets(settings.name, settings.ssh.port, None)
    conn = connect_for(settings, target)
    lines: list[str] = []
    try:
        with (
            change_lock(conn, "integration", out=lines.append),
            pytest.raises(RolledBackError) as raised,
        ):
            apply_change(
                conn,
                task="integration",
                files=[DesiredFile(layout.ZOT_CONFIG, '{"storage": ', 0o600)],
                steps=[restart_step(layout.ZOT_UNIT)],
                checks=common.zot_checks(timeout=30),
                out=lines.append,
            )
    finally:
        conn.close()
    assert "zot" in str(raised.value)
    assert "back at its previous state" in str(raised.value)
    assert deployment.host.run(["sha256sum", layout.ZOT_CONFIG]).stdout == before
    state = deployment.host.run(["systemctl", "is-active", layout.ZOT_UNIT], check=False)
    assert state.stdout.strip() == "active"
