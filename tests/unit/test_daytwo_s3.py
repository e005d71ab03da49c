"""set-s3-credentials against the fake server."""

from __future__ import annotations

import io
import json
import threading

import pytest

from ops import htpasswd, layout
from ops.config import Settings, parse_settings
from ops.daytwo import s3
from ops.errors import ConfigError
from ops.remote.change import RolledBackError
from ops.remote.hosts import HostOutput
from ops.render import DeploymentSecrets, render_credentials, render_zot_config
from ops.secrets import Secret, SecretSource

from .remote_fakes import FakeServer, fast_checks, serve_zot

OLD_SECRET = "OLDsecretKEY0000000000000000000000000000"
NEW_SECRET = "NEWsecretKEY1111111111111111111111111111"
ADMIN_PASSWORD = "admin-password-123456"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_checks(monkeypatch)


@pytest.fixture
def settings(base_settings: dict) -> Settings:
    return parse_settings(base_settings)


@pytest.fixture(scope="module")
def admin_hash() -> str:
    return htpasswd.hash_password(Secret(ADMIN_PASSWORD))


@pytest.fixture
def server(settings: Settings, admin_hash: str) -> FakeServer:
    server = FakeServer()
    old = DeploymentSecrets(Secret("OLDKEYID"), Secret(OLD_SECRET), {})
    server.add_file(layout.ZOT_CONFIG, render_zot_config(settings), 0o600)
    server.add_file(layout.ZOT_CREDENTIALS, render_credentials(old), 0o600)
    server.add_file(layout.ZOT_HTPASSWD, f"admin:{admin_hash}\n", 0o600)
    server.add_dir(layout.TOOLKIT_STATE_DIR)
    server.add_unit(layout.ZOT_UNIT)
    return server


def output() -> tuple[io.StringIO, HostOutput]:
    stream = io.StringIO()
    return stream, HostOutput("server-1", False, stream, threading.Lock())


def run_s3(server: FakeServer, settings: Settings, secret: str = NEW_SECRET, **kwargs: object):
    stream, out = output()
    result = s3.set_s3_credentials(
        server,
        out,
        settings=settings,
        access_key=Secret("NEWKEYID"),
        secret_key=Secret(secret),
        admin=("admin", Secret(ADMIN_PASSWORD)),
        **kwargs,
    )
    return result, stream.getvalue()


def test_keys_replaced_and_storage_read(server: FakeServer, settings: Settings) -> None:
    logins = serve_zot(server, storage_ok=lambda: NEW_SECRET in server.text(layout.ZOT_CREDENTIALS))
    result, text = run_s3(server, settings)
    assert result.status == "changed"
    assert server.text(layout.ZOT_CREDENTIALS) == (
        f"AWS_ACCESS_KEY_ID=NEWKEYID\nAWS_SECRET_ACCESS_KEY={NEW_SECRET}\n"
    )
    assert server.files[layout.ZOT_CREDENTIALS].mode == 0o600
    assert ("admin", "http://127.0.0.1:5000/v2/_catalog") in logins
    assert "(secret content changed)" in text
    assert layout.LOCK_DIR not in server.dirs


def test_secrets_stay_out_of_commands_and_output(server: FakeServer, settings: Settings) -> None:
    serve_zot(server)
    _, text = run_s3(server, settings)
    for secret in (NEW_SECRET, OLD_SECRET, ADMIN_PASSWORD):
        assert secret not in text
        assert all(secret not in command for command in server.commands)
    audit = server.text(layout.AUDIT_LOG)
    assert NEW_SECRET not in audit
    assert json.loads(audit.splitlines()[-1])["task"] == "set-s3-credentials"
    # The admin password reaches curl on stdin only.
    assert any(ADMIN_PASSWORD in (call.stdin or "") for call in server.calls)


def test_second_run_no_change(server: FakeServer, settings: Settings) -> None:
    serve_zot(server)
    run_s3(server, settings)
    restarts = server.units[layout.ZOT_UNIT]["NRestarts"]
    result, text = run_s3(server, settings)
    assert result.status == "no change"
    assert result.message == ""
    assert server.units[layout.ZOT_UNIT]["NRestarts"] == restarts
    assert f"{layout.ZOT_CREDENTIALS}: no change" in text


def test_dry_run_changes_nothing(server: FakeServer, settings: Settings) -> None:
    serve_zot(server)
    before = {path: file.data for path, file in server.files.items()}
    result, text = run_s3(server, settings, dry_run=True)
    assert result.status == "would change"
    assert result.message == f"{layout.ZOT_CREDENTIALS}, restart zot.service"
    assert {path: file.data for path, file in server.files.items()} == before
    assert server.uploads == []
    assert layout.LOCK_DIR not in server.dirs
    assert "would restart zot.service" in text


def test_storage_rejects_new_keys_rolls_back(server: FakeServer, settings: Settings) -> None:
    serve_zot(server, storage_ok=lambda: OLD_SECRET in server.text(layout.ZOT_CREDENTIALS))
    old_credentials = server.text(layout.ZOT_CREDENTIALS)
    with pytest.raises(RolledBackError) as raised:
        run_s3(server, settings, secret="BADsecret")
    message = str(raised.value)
    assert "_catalog" in message
    assert "back at its previous state" in message
    assert "BADsecret" not in message
    assert server.text(layout.ZOT_CREDENTIALS) == old_credentials
    assert server.units[layout.ZOT_UNIT]["NRestarts"] == "2"
    assert layout.LOCK_DIR not in server.dirs


def test_bucket_change_rewrites_config(server: FakeServer, settings: Settings) -> None:
    serve_zot(server)
    moved = s3.storage_with(settings, bucket="other-bucket", location="hel1")
    run_s3(server, moved)
    driver = json.loads(server.text(layout.ZOT_CONFIG))["storage"]["storageDriver"]
    assert driver["bucket"] == "other-bucket"
    assert driver["regionendpoint"] == "https://hel1.your-objectstorage.com"
    assert driver["region"] == "hel1"


def test_explicit_endpoint_kept_on_location_change(base_settings: dict) -> None:
    base_settings["storage"]["endpoint"] = "https://s3.example.net"
    settings = parse_settings(base_settings)
    moved = s3.storage_with(settings, location="nbg1")
    assert moved.storage.endpoint == "https://s3.example.net"
    assert moved.storage.location == "nbg1"


def test_invalid_bucket_rejected(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"storage\.bucket"):
        s3.storage_with(settings, bucket="Not_A_Bucket")


def test_keys_never_from_arguments() -> None:
    source = SecretSource(environ={}, file_values={})
    with pytest.raises(ConfigError, match="never taken from the command line"):
        s3.read_keys(source, ask=None)


def test_keys_from_environment_then_prompt() -> None:
    source = SecretSource(environ={"AWS_ACCESS_KEY_ID": "KEYID"}, file_values={})
    asked: list[str] = []

    def ask(question: str) -> str:
        asked.append(question)
        return "typed-secret"

    access, secret = s3.read_keys(source, ask)
    assert access.reveal() == "KEYID"
    assert secret.reveal() == "typed-secret"
    assert len(asked) == 1
    assert "AWS_SECRET_ACCESS_KEY" in asked[0]
