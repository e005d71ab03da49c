"""rotate-password, add-user, remove-user and list-users against the fake server."""

from __future__ import annotations

import io
import json
import re
import threading

import pytest

from ops import htpasswd, layout
from ops.config import Settings, parse_settings
from ops.daytwo import users
from ops.errors import ConfigError, OpsError
from ops.remote.change import RolledBackError
from ops.remote.hosts import HostOutput
from ops.render import render_zot_config
from ops.secrets import Secret

from .remote_fakes import FakeServer, fast_checks, serve_zot

OLD = "old-password-0123456789"
NEW = "new-password-9876543210"
CI = "ci-password-abcdefghijk"


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_checks(monkeypatch)


@pytest.fixture
def settings(base_settings: dict) -> Settings:
    return parse_settings(base_settings)


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {"admin": htpasswd.hash_password(Secret(OLD)), "ci": htpasswd.hash_password(Secret(CI))}


@pytest.fixture
def server(settings: Settings, hashes: dict[str, str]) -> FakeServer:
    server = FakeServer()
    server.add_file(layout.ZOT_CONFIG, render_zot_config(settings), 0o600)
    server.add_file(layout.ZOT_HTPASSWD, htpasswd.format_entries(hashes), 0o600)
    server.add_dir(layout.TOOLKIT_STATE_DIR)
    server.add_unit(layout.ZOT_UNIT)
    return server


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def out(stream: io.StringIO) -> HostOutput:
    return HostOutput("server-1", False, stream, threading.Lock())


def entries(server: FakeServer) -> dict[str, str]:
    return htpasswd.parse(server.text(layout.ZOT_HTPASSWD))


def test_rotate_checks_new_and_old(
    server: FakeServer, out: HostOutput, stream: io.StringIO
) -> None:
    logins = serve_zot(server)
    result = users.rotate_password(
        server, out, user="admin", new_password=Secret(NEW), old_password=Secret(OLD)
    )
    assert result.status == "changed"
    assert result.message == f"{layout.ZOT_HTPASSWD}, restart zot.service"
    assert htpasswd.verify(Secret(NEW), entries(server)["admin"])
    assert not htpasswd.verify(Secret(OLD), entries(server)["admin"])
    assert entries(server)["ci"] == htpasswd.parse(server.text(layout.ZOT_HTPASSWD))["ci"]
    assert logins.count(("admin", "http://127.0.0.1:5000/v2/")) == 2
    assert "admin logs in with the new password" in stream.getvalue()
    assert "admin is rejected with the old password" in stream.getvalue()


def test_rotate_secrets_only_on_stdin(
    server: FakeServer, out: HostOutput, stream: io.StringIO
) -> None:
    serve_zot(server)
    users.rotate_password(
        server, out, user="admin", new_password=Secret(NEW), old_password=Secret(OLD)
    )
    for call in server.calls:
        assert NEW not in call.command
        assert OLD not in call.command
    assert NEW not in stream.getvalue()
    assert OLD not in stream.getvalue()
    assert NEW not in server.text(layout.AUDIT_LOG)
    stdins = [call.stdin for call in server.calls if call.stdin]
    assert any(NEW in text for text in stdins)


def test_rotate_is_always_a_change(server: FakeServer, out: HostOutput) -> None:
    serve_zot(server)
    for _ in range(2):
        result = users.rotate_password(
            server, out, user="admin", new_password=Secret(NEW), old_password=None
        )
        assert result.status == "changed"
    assert server.units[layout.ZOT_UNIT]["NRestarts"] == "2"


def test_rotate_unknown_user(server: FakeServer, out: HostOutput) -> None:
    with pytest.raises(OpsError, match="inv add-user bob"):
        users.rotate_password(server, out, user="bob", new_password=Secret(NEW), old_password=None)
    assert layout.LOCK_DIR not in server.dirs


def test_rotate_rolls_back_when_old_still_works(
    server: FakeServer, out: HostOutput, hashes: dict
) -> None:
    # A zot that kept the old htpasswd in memory: both passwords would work.
    serve_zot(server)
    original = server.text(layout.ZOT_HTPASSWD)

    def stale_zot(argv: list[str], stdin: str | None) -> tuple[str, str, int]:
        return ("200" if stdin else "401"), "", 0

    server.handlers.insert(0, (re.compile(r"^curl "), stale_zot))
    with pytest.raises(RolledBackError, match="old password") as raised:
        users.rotate_password(
            server, out, user="admin", new_password=Secret(NEW), old_password=Secret(OLD)
        )
    assert "back at its previous state" in str(raised.value)
    assert server.text(layout.ZOT_HTPASSWD) == original


def test_rotate_dry_run_writes_nothing(
    server: FakeServer, out: HostOutput, stream: io.StringIO
) -> None:
    before = server.text(layout.ZOT_HTPASSWD)
    result = users.rotate_password(
        server, out, user="admin", new_password=Secret(NEW), old_password=None, dry_run=True
    )
    assert result.status == "would change"
    assert result.message == f"{layout.ZOT_HTPASSWD}, restart zot.service"
    assert server.text(layout.ZOT_HTPASSWD) == before
    assert server.uploads == []
    assert "(secret content changed)" in stream.getvalue()


def test_add_user_writes_config_and_htpasswd(
    server: FakeServer, out: HostOutput, settings: Settings
) -> None:
    serve_zot(server)
    effective, user = users.settings_adding(settings, "deploy-bot", "push")
    result = users.add_user(server, out, settings=effective, user=user, password=Secret(NEW))
    assert result.status == "changed"
    assert htpasswd.verify(Secret(NEW), entries(server)["deploy-bot"])
    assert users.roles_from_config(server.text(layout.ZOT_CONFIG))["deploy-bot"] == "push"
    second = users.add_user(server, out, settings=effective, user=user, password=Secret(NEW))
    assert second.status == "no change"
    assert second.message == ""


def test_add_existing_user_other_password(
    server: FakeServer, out: HostOutput, settings: Settings
) -> None:
    with pytest.raises(OpsError, match="rotate-password --user ci"):
        users.add_user(
            server, out, settings=settings, user=settings.user("ci"), password=Secret(NEW)
        )


def test_add_user_needs_role(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="--role"):
        users.settings_adding(settings, "newcomer", None)
    with pytest.raises(ConfigError, match="role push"):
        users.settings_adding(settings, "ci", "admin")
    with pytest.raises(ConfigError):
        users.settings_adding(settings, "bad name;", "read")


def test_remove_user(server: FakeServer, out: HostOutput, settings: Settings) -> None:
    logins = serve_zot(server)
    effective = users.settings_removing(settings, "ci")
    result = users.remove_user(server, out, settings=effective, name="ci", old_password=Secret(CI))
    assert result.status == "changed"
    assert "ci" not in entries(server)
    assert "ci" not in users.roles_from_config(server.text(layout.ZOT_CONFIG))
    assert ("ci", "http://127.0.0.1:5000/v2/") in logins
    again = users.remove_user(server, out, settings=effective, name="ci", old_password=None)
    assert again.status == "no change"


def test_last_admin_not_removed(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="last admin"):
        users.settings_removing(settings, "admin")


def test_list_users(
    server: FakeServer, out: HostOutput, stream: io.StringIO, settings: Settings
) -> None:
    result = users.list_users(server, out, settings=settings)
    lines = stream.getvalue().splitlines()
    assert lines[0].split() == ["USER", "ROLE", "NOTE"]
    assert lines[1].split() == ["admin", "admin"]
    assert lines[2].split() == ["ci", "push"]
    assert lines[3].startswith("viewer")
    assert "not on the server" in lines[3]
    assert result.message == "2 users"
    assert not [c for c in server.commands if not c.startswith(("if [ -e", "cat -- "))]


def test_roles_from_config(settings: Settings) -> None:
    roles = users.roles_from_config(render_zot_config(settings))
    assert roles == {"admin": "admin", "ci": "push", "viewer": "read"}
    assert users.roles_from_config("not json") == {}
    assert users.roles_from_config(json.dumps({"http": {}})) == {}


def test_short_new_password_rejected() -> None:
    with pytest.raises(ConfigError, match="shorter than 12"):
        users.choose_password(Secret("short"))
    generated = users.choose_password(None)
    assert generated.generated
    assert len(generated.secret.reveal()) == 32
