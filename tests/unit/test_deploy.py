"""deploy up to the SSH phase against the fake Hetzner Cloud API, and converge's pure parts."""

from __future__ import annotations

import io

import pytest

from ops import htpasswd, state
from ops.config import parse_settings
from ops.converge import ServerRecord, forget_host_key, reconcile_htpasswd, wait_for_dns
from ops.deploy import deploy, destroy
from ops.errors import ConfigError, OpsError
from ops.progress import Progress
from ops.remote import checks
from ops.remote.connect import Target
from ops.secrets import Secret, SecretSource
from tests.fakes.hcloud_api import FakeHetznerCloud
from tests.unit.test_hetzner_provision import client_for

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIADEPLOYTEST",
    "AWS_SECRET_ACCESS_KEY": "deploySecretKey/0123456789",
}


@pytest.fixture
def fake():
    fake = FakeHetznerCloud(action_polls=1).start()
    yield fake
    fake.stop()
    fake.check()


@pytest.fixture
def settings(base_settings):
    return parse_settings(base_settings)


def source(token: str | None) -> SecretSource:
    values = dict(SECRETS)
    if token is not None:
        values["HCLOUD_TOKEN"] = token
    return SecretSource(environ=values, file_values={})


def test_dry_run_creates_nothing(fake, settings, state_dir):
    output = io.StringIO()
    outcome = deploy(
        settings,
        dry_run=True,
        source=source(fake.token),
        progress=Progress(output),
        client=client_for(fake),
    )
    assert outcome.dry_run
    assert outcome.record is None
    assert {request.method for request in fake.requests} == {"GET"}
    text = output.getvalue()
    assert 'server    create   "registry"' in text
    assert "firewall  create" in text
    assert not (state_dir / "registry" / "servers.json").exists()
    assert not (state_dir / "registry" / "passwords").exists()
    assert fake.token not in text


def test_missing_token_fails_before_any_request(fake, settings, state_dir):
    with pytest.raises(ConfigError, match="HCLOUD_TOKEN is not set"):
        deploy(settings, source=source(None), progress=Progress(io.StringIO()))
    assert fake.requests == []


def test_rejected_token_named_plainly(fake, settings, state_dir):
    with pytest.raises(OpsError) as caught:
        deploy(
            settings,
            dry_run=True,
            source=source("wrong-token"),
            progress=Progress(io.StringIO()),
            client=client_for(fake, token="wrong-token"),
        )
    assert "HCLOUD_TOKEN was rejected" in str(caught.value)
    assert "wrong-token" not in str(caught.value)


def test_missing_s3_key_fails_before_any_request(fake, settings, state_dir):
    values = source(fake.token)
    values = SecretSource(
        environ={k: v for k, v in values.environ.items() if k != "AWS_SECRET_ACCESS_KEY"},
        file_values={},
    )
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY is not set"):
        deploy(settings, source=values, progress=Progress(io.StringIO()), client=client_for(fake))
    assert fake.requests == []


def test_destroy_removes_server_keeps_bucket(fake, settings, state_dir):
    client = client_for(fake)
    from ops import hetzner, provision

    result = provision.apply(hetzner.plan(settings, client), "#cloud-config\n", client)
    state.write_servers("registry", [{"name": "registry", "ipv4": result.ipv4}])
    known_hosts = state.deployment_dir("registry") / "known_hosts"
    state.write_private(known_hosts, f"{result.ipv4} ssh-ed25519 AAAA1\nother ssh-ed25519 AAAA2\n")
    lines = destroy(settings, source=source(fake.token), client=client)
    assert known_hosts.read_text() == "other ssh-ed25519 AAAA2\n"
    assert any(line.startswith("removed server") for line in lines)
    assert any("my-registry-storage" in line and "not touched" in line for line in lines)
    assert fake.requests_to("DELETE /servers/{id}")
    assert state.read_servers("registry") == []


def test_reconcile_keeps_matching_hash():
    password = Secret("first-password-123")
    first, _ = reconcile_htpasswd(None, {"admin": password})
    second, kept = reconcile_htpasswd(first, {"admin": password})
    assert kept == set()
    assert second == first
    rotated, _ = reconcile_htpasswd(first, {"admin": Secret("second-password-456")})
    assert rotated != first
    assert htpasswd.verify(Secret("second-password-456"), htpasswd.parse(rotated)["admin"])


def test_reconcile_drops_unconfigured_users():
    text, _ = reconcile_htpasswd(
        None, {"admin": Secret("a-password-123"), "old": Secret("b-password-123")}
    )
    again, _ = reconcile_htpasswd(text, {"admin": Secret("a-password-123")})
    assert set(htpasswd.parse(again)) == {"admin"}


def test_reconcile_keeps_hash_of_unknown_password():
    server, _ = reconcile_htpasswd(None, {"ci": Secret("password-set-elsewhere")})
    generated = Secret("freshly-generated-password")
    text, kept = reconcile_htpasswd(server, {"ci": generated}, frozenset({"ci"}))
    assert kept == {"ci"}
    assert text == server
    assert htpasswd.verify(Secret("password-set-elsewhere"), htpasswd.parse(text)["ci"])
    new_user, kept = reconcile_htpasswd(server, {"new": generated}, frozenset({"new"}))
    assert kept == set()
    assert htpasswd.verify(generated, htpasswd.parse(new_user)["new"])


def record(ipv4="203.0.113.10", ipv6="2001:db8::1") -> ServerRecord:
    return ServerRecord(name="registry", ipv4=ipv4, ipv6=ipv6, ssh_host=ipv4, ssh_port=22)


def test_dns_match_passes(settings, monkeypatch):
    monkeypatch.setattr(checks, "POLL_INTERVAL", 0)
    output = io.StringIO()
    wait_for_dns(settings, record(), Progress(output), 1, resolver=lambda name: {"203.0.113.10"})
    assert "resolves to 203.0.113.10" in output.getvalue()


def test_dns_mismatch_names_records(settings):
    with pytest.raises(OpsError) as caught:
        wait_for_dns(
            settings, record(), Progress(io.StringIO()), 0, resolver=lambda name: {"198.51.100.7"}
        )
    message = str(caught.value)
    assert "resolves to 198.51.100.7, not to this server" in message
    assert "A registry.example.com -> 203.0.113.10" in message
    assert "AAAA registry.example.com -> 2001:db8::1" in message
    assert "Caddy has not asked for a certificate yet" in message


def test_dns_unresolved_reported(settings):
    with pytest.raises(OpsError, match="resolves to nothing"):
        wait_for_dns(settings, record(), Progress(io.StringIO()), 0, resolver=lambda name: set())


def test_forget_host_key_drops_only_that_host(settings, state_dir):
    path = state.deployment_dir("registry") / "known_hosts"
    state.write_private(
        path, "203.0.113.10 ssh-ed25519 AAAA1\n[127.0.0.1]:2222 ssh-ed25519 AAAA2\n"
    )
    forget_host_key(settings, Target("registry", "203.0.113.10", 22))
    assert path.read_text() == "[127.0.0.1]:2222 ssh-ed25519 AAAA2\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_progress_plain_lines_when_not_terminal():
    now = [0.0]
    output = io.StringIO()
    progress = Progress(output, clock=lambda: now[0])
    progress.stage("waiting for SSH")
    now[0] = 1.0
    progress.waiting("refused")
    now[0] = 20.0
    progress.waiting("refused")
    now[0] = 22.0
    progress.done("connected")
    lines = output.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("waiting for SSH")
    assert "still waiting, refused (20s)" in lines[1]
    assert lines[2].endswith("connected (22.0s)")
    assert "\r" not in output.getvalue()
