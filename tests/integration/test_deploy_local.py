"""End to end on a local Debian 12 host: render, boot, cloud-init, SSH, secrets, Caddy, push and pull.

The host boots from the same deploy-mode user data as a Hetzner server. The
stand-ins replace what this machine cannot reach: the zot image (Debian's
distribution registry behind zot's command line), Caddy's release downloads,
Object Storage (moto's S3 server) and, through a caching proxy, Debian's mirror.
"""

from __future__ import annotations

import json
import stat

import pytest

from ops import layout

pytestmark = pytest.mark.integration


def test_deploy_reaches_https(local_deployment):
    outcome = local_deployment.outcome
    assert outcome.record.created
    assert "created server" in outcome.changes[0]
    output = local_deployment.output
    assert "cloud-init finished without errors" in output
    assert "answers 401 with a Basic challenge over valid TLS" in output


def test_zot_answers_inside_host(local_deployment):
    host = local_deployment.host
    status = host.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:5000/v2/"]
    ).stdout
    assert status == "401"
    listening = host.run(["ss", "-Htln"]).stdout
    assert "127.0.0.1:5000" in listening
    assert "0.0.0.0:5000" not in listening
    assert "*:5000" not in listening


def test_secret_files_private_on_host(local_deployment):
    root = local_deployment.host.root
    for path in (layout.ZOT_CREDENTIALS, layout.ZOT_HTPASSWD, layout.ZOT_CONFIG):
        mode = stat.S_IMODE((root / path.lstrip("/")).stat().st_mode)
        assert mode == 0o600, path


def test_user_data_on_host_has_no_secret(local_deployment):
    host = local_deployment.host
    user_data = (host.root / "var/lib/cloud/seed/nocloud/user-data").read_text()
    for secret in local_deployment.stack.secret_environment().values():
        assert secret.reveal() not in user_data
    for user in ("admin", "ci", "viewer"):
        assert local_deployment.password(user) not in user_data
    assert "$2b$" not in user_data


def test_services_enabled(local_deployment):
    host = local_deployment.host
    for unit in (layout.ZOT_UNIT, layout.CADDY_UNIT, layout.AUTOUPDATE_TIMER):
        assert host.run(["systemctl", "is-enabled", unit]).stdout.strip() == "enabled", unit
        assert host.run(["systemctl", "is-active", unit]).stdout.strip() == "active", unit
    labels = host.run(["podman", "inspect", "--format", "{{json .Config.Labels}}", "zot"]).stdout
    assert json.loads(labels)[layout.AUTOUPDATE_LABEL] == "registry"
    ufw = host.run(["ufw", "status"]).stdout
    assert "Status: active" in ufw
    assert "443/tcp" in ufw


def test_push_and_pull_through_caddy(local_deployment, tmp_path):
    client = local_deployment.client("push-pull")
    login = client.login("admin", local_deployment.password("admin"))
    assert login.returncode == 0, login.stderr
    assert "Login Succeeded" in login.stdout
    image = local_deployment.stack.image
    source = image.storage_reference(image.local_reference("v1"))
    pushed = client.push(source, "e2e/standin:1")
    assert pushed.returncode == 0, pushed.stderr
    pulled = client.pull("e2e/standin:1", tmp_path / "pulled")
    assert pulled.returncode == 0, pulled.stderr
    index = json.loads((tmp_path / "pulled" / "index.json").read_text())
    assert index["manifests"]
    objects = local_deployment.stack.s3.list_objects()
    assert any("/blobs/" in key for key in objects), objects[:20]
    assert any("e2e/standin" in key for key in objects), objects[:20]


def test_wrong_password_rejected(local_deployment):
    client = local_deployment.client("wrong")
    login = client.login("admin", "not-the-password-at-all")
    assert login.returncode != 0
    assert "invalid username/password" in login.stderr


def test_second_deploy_changes_nothing(local_deployment):
    outcome = local_deployment.deploy()
    assert outcome.record.created is False
    assert outcome.changes == []
    assert "(no change)" in local_deployment.output


def test_no_secret_in_deploy_output(local_deployment):
    text = local_deployment.output
    for secret in local_deployment.stack.secret_environment().values():
        assert secret.reveal() not in text
    for user in ("admin", "ci", "viewer"):
        assert local_deployment.password(user) not in text


def test_lost_local_password_keeps_server_hash(local_deployment):
    saved = local_deployment.state_dir / local_deployment.settings.name / "passwords" / "viewer"
    password = saved.read_text()
    saved.unlink()
    try:
        outcome = local_deployment.deploy()
        assert outcome.changes == []
        assert outcome.generated == {}
        assert "password of registry user viewer is not known here" in local_deployment.output
        assert not saved.exists()
        login = local_deployment.client("kept").login("viewer", password.strip())
        assert login.returncode == 0, login.stderr
    finally:
        saved.write_text(password)
        saved.chmod(0o600)


def test_settings_change_reaches_server(local_deployment):
    original = local_deployment.settings
    changed = original.model_copy(
        update={
            "acme_email": "registry-admin@example.com",
            "zot": original.zot.model_copy(update={"metrics": True}),
        }
    )
    local_deployment.settings = changed
    try:
        outcome = local_deployment.deploy()
        assert "updated /etc/zot/config.json" in outcome.changes
        assert "updated /etc/caddy/Caddyfile" in outcome.changes
        root = local_deployment.host.root
        config = json.loads((root / "etc/zot/config.json").read_text())
        assert config["extensions"]["metrics"]["enable"] is True
        assert "registry-admin@example.com" in (root / "etc/caddy/Caddyfile").read_text()
        assert "answers 401 with a Basic challenge" in local_deployment.output
        assert local_deployment.deploy().changes == []
    finally:
        local_deployment.settings = original
        restored = local_deployment.deploy()
    assert "updated /etc/zot/config.json" in restored.changes


def test_caddy_version_drift_reported(local_deployment):
    original = local_deployment.settings
    other = local_deployment.stack.caddy.versions[1]
    local_deployment.settings = original.model_copy(
        update={"caddy": original.caddy.model_copy(update={"version": other})}
    )
    try:
        local_deployment.deploy()
        installed = original.caddy.version
        assert f"note: Caddy {installed} runs on the server, the settings name {other}" in (
            local_deployment.output
        )
        assert f"inv upgrade-caddy --version {other}" in local_deployment.output
    finally:
        local_deployment.settings = original
        local_deployment.deploy()
    assert "note: Caddy" not in local_deployment.output
