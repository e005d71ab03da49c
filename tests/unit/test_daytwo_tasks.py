"""The Invoke tasks end to end, with fake servers in place of SSH connections."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from invoke import Config, Context
from invoke.exceptions import Exit

from ops import htpasswd, layout
from ops.config import parse_settings
from ops.daytwo import common
from ops.daytwo import tasks as daytwo
from ops.remote.connect import Target
from ops.render import DeploymentSecrets, render_credentials, render_zot_config
from ops.secrets import Secret

from .remote_fakes import FakeServer, fast_checks, serve_zot

NEW_SECRET = "NEWsecretKEY1111111111111111111111111111"
ADMIN_PASSWORD = "admin-password-123456"


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_checks(monkeypatch)


@pytest.fixture
def context(base_settings: dict) -> Context:
    return Context(config=Config(overrides={"deployment": base_settings}))


@pytest.fixture
def servers(
    base_settings: dict, monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> dict[str, FakeServer]:
    settings = parse_settings(base_settings)
    admin_hash = htpasswd.hash_password(Secret(ADMIN_PASSWORD))
    made: dict[str, FakeServer] = {}
    for name in ("alpha", "beta"):
        server = FakeServer(host=name)
        old = DeploymentSecrets(Secret("OLDKEYID"), Secret("OLDSECRET"), {})
        server.add_file(layout.ZOT_CONFIG, render_zot_config(settings), 0o600)
        server.add_file(layout.ZOT_CREDENTIALS, render_credentials(old), 0o600)
        server.add_file(layout.ZOT_HTPASSWD, f"admin:{admin_hash}\n", 0o600)
        server.add_dir(layout.TOOLKIT_STATE_DIR)
        server.add_unit(layout.ZOT_UNIT)
        serve_zot(server)
        made[name] = server

    def connect(settings_: object, target: Target) -> FakeServer:
        return made[target.address]

    monkeypatch.setattr(common, "connect_for", connect)
    for variable in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "ZOT_PASSWORD_ADMIN",
        "ZOT_NEW_PASSWORD",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ZOT_PASSWORD_ADMIN", ADMIN_PASSWORD)
    return made


def test_s3_task_on_two_hosts(context: Context, servers: dict, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "NEWKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", NEW_SECRET)
    daytwo.set_s3_credentials(context, host="alpha,beta")
    captured = capsys.readouterr()
    assert "alpha: changed" in captured.out
    assert "beta: changed" in captured.out
    assert "[alpha] restart zot.service" in captured.out
    for text in (captured.out, captured.err):
        assert NEW_SECRET not in text
        assert ADMIN_PASSWORD not in text
    for server in servers.values():
        assert NEW_SECRET in server.text(layout.ZOT_CREDENTIALS)
        assert all(NEW_SECRET not in command for command in server.commands)


def test_s3_task_without_keys_exits(context: Context, servers: dict, monkeypatch) -> None:
    monkeypatch.setattr("ops.prompt.interactive", lambda: False)
    with pytest.raises(Exit) as raised:
        daytwo.set_s3_credentials(context, host="alpha")
    assert raised.value.code == 1
    assert "AWS_ACCESS_KEY_ID is not set" in str(raised.value.message)
    assert servers["alpha"].calls == []


def test_failed_host_exits_nonzero(context: Context, servers: dict, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "NEWKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", NEW_SECRET)
    servers["beta"].add_dir(layout.LOCK_DIR)
    with pytest.raises(Exit) as raised:
        daytwo.set_s3_credentials(context, host="alpha,beta")
    assert raised.value.code == 1
    assert "1 of 2 servers failed" in str(raised.value.message)
    captured = capsys.readouterr()
    assert "alpha: changed" in captured.out
    assert "beta: failed: the change lock on beta is held by an unknown owner" in captured.out


def test_rotate_generates_and_shows_once(
    context: Context, servers: dict, state_dir: Path, capsys
) -> None:
    daytwo.rotate_password(context, user="admin", host="alpha")
    captured = capsys.readouterr().out
    saved = state_dir / "registry" / "passwords" / "admin"
    password = saved.read_text().strip()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert captured.count(password) == 1
    assert "generated password for registry user admin" in captured
    assert "ZOT_PASSWORD_ADMIN in your environment" in captured
    entries = htpasswd.parse(servers["alpha"].text(layout.ZOT_HTPASSWD))
    assert htpasswd.verify(Secret(password), entries["admin"])
    assert all(password not in command for command in servers["alpha"].commands)
    assert ADMIN_PASSWORD not in captured


def test_rotate_dry_run_shows_and_saves_nothing(
    context: Context, servers: dict, state_dir: Path, capsys
) -> None:
    daytwo.rotate_password(context, user="admin", host="alpha", dry_run=True)
    captured = capsys.readouterr().out
    assert "generated password" not in captured
    assert "dry run, nothing changed" in captured
    assert not (state_dir / "registry" / "passwords" / "admin").exists()
    assert servers["alpha"].uploads == []


def test_result_lines_name_status_once(
    context: Context, servers: dict, monkeypatch, capsys
) -> None:
    daytwo.rotate_password(context, user="admin", host="alpha")
    lines = capsys.readouterr().out.splitlines()
    assert f"alpha: changed: {layout.ZOT_HTPASSWD}, restart zot.service" in lines
    assert lines[-1] == "1 changed"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "OLDKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "OLDSECRET")
    daytwo.set_s3_credentials(context, host="alpha")
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == ["alpha: no change", "1 no change"]


def test_dry_run_result_says_would_change(context: Context, servers: dict, capsys) -> None:
    daytwo.rotate_password(context, user="admin", host="alpha", dry_run=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:] == [
        "dry run, nothing changed:",
        f"alpha: would change: {layout.ZOT_HTPASSWD}, restart zot.service",
        "1 would change",
    ]


def test_logs_of_missing_file(context: Context, servers: dict, capsys) -> None:
    server = servers["alpha"]
    server.on(r"^test -e ", lambda argv, stdin: ("", "", 0 if argv[2] in server.files else 1))
    daytwo.logs(context, source="zot-audit", lines=200, host="alpha")
    captured = capsys.readouterr()
    assert captured.out == f"alpha: zot has not written {layout.ZOT_AUDIT_LOG} yet\n"
    assert not [command for command in server.commands if command.startswith("tail ")]


def test_rotate_with_given_password(context: Context, servers: dict, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ZOT_NEW_PASSWORD", "chosen-password-42")
    daytwo.rotate_password(context, user="admin", host="alpha")
    captured = capsys.readouterr().out
    assert "chosen-password-42" not in captured
    assert "generated password" not in captured


def test_add_user_task(context: Context, servers: dict, state_dir: Path, capsys) -> None:
    daytwo.add_user(context, name="ci", host="alpha")
    captured = capsys.readouterr().out
    assert "alpha: changed" in captured
    saved = (state_dir / "registry" / "passwords" / "ci").read_text().strip()
    assert captured.count(saved) == 1
    daytwo.add_user(context, name="ci", host="alpha")
    assert "alpha: no change" in capsys.readouterr().out


def test_remove_user_task_keeps_last_admin(context: Context, servers: dict) -> None:
    with pytest.raises(Exit, match="last admin"):
        daytwo.remove_user(context, name="admin", host="alpha")


def test_auto_update_flags_exclusive(context: Context) -> None:
    with pytest.raises(Exit, match="choose one of"):
        daytwo.auto_update(context, run=True, dry_run=True)
