"""apply_change against the fake server: plan, dry run, apply, validate, roll back."""

from __future__ import annotations

import json

import paramiko
import pytest

from ops import layout
from ops.errors import RemoteError, VerificationError
from ops.remote import change, commands
from ops.remote.change import DesiredFile, RestoreFailedError, RolledBackError, Step

from .remote_fakes import FakeServer, answer

CONFIG = layout.ZOT_CONFIG
CREDENTIALS = layout.ZOT_CREDENTIALS
SECRET_VALUE = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def server() -> FakeServer:
    server = FakeServer()
    server.add_file(CONFIG, '{"storage": "old"}\n', 0o644)
    server.add_file(CREDENTIALS, "AWS_SECRET_ACCESS_KEY=old-secret\n", 0o600)
    server.add_dir(layout.TOOLKIT_STATE_DIR)
    server.add_unit(layout.ZOT_UNIT)
    return server


@pytest.fixture
def lines() -> list[str]:
    return []


def wanted(config: str = '{"storage": "new"}\n', secret: str = SECRET_VALUE) -> list[DesiredFile]:
    return [
        DesiredFile(CONFIG, config, 0o644),
        DesiredFile(CREDENTIALS, f"AWS_SECRET_ACCESS_KEY={secret}\n", 0o600, secret=True),
    ]


def restart() -> Step:
    return change.restart_step(layout.ZOT_UNIT)


def audit_lines(server: FakeServer) -> list[dict]:
    if layout.AUDIT_LOG not in server.files:
        return []
    return [json.loads(line) for line in server.text(layout.AUDIT_LOG).splitlines()]


def writes(server: FakeServer) -> list[str]:
    """Commands that change something (everything except probes and reads)."""
    readers = ("if [ -e ", "cat -- ", "systemctl show", "curl ")
    return [c for c in server.commands if not c.startswith(readers)]


def test_apply_replaces_files_and_restarts(server: FakeServer, lines: list[str]) -> None:
    result = change.apply_change(
        server, task="set-s3-credentials", files=wanted(), steps=[restart()], out=lines.append
    )
    assert result.changed
    assert result.files == [CONFIG, CREDENTIALS]
    assert server.text(CONFIG) == '{"storage": "new"}\n'
    assert server.text(CREDENTIALS) == f"AWS_SECRET_ACCESS_KEY={SECRET_VALUE}\n"
    assert server.files[CREDENTIALS].mode == 0o600
    assert server.units[layout.ZOT_UNIT]["NRestarts"] == "1"
    assert "systemctl restart -- zot.service" in server.commands
    assert not [p for p in server.files if ".zot-hetzner-" in p], "temp files left behind"


def test_backup_kept_with_old_content(server: FakeServer, lines: list[str]) -> None:
    change.apply_change(server, task="t", files=wanted(), steps=[restart()], out=lines.append)
    backups = {p: f for p, f in server.files.items() if p.startswith(layout.BACKUP_DIR + "/")}
    by_name = {p.rsplit("/", 1)[1]: f for p, f in backups.items()}
    assert by_name["etc_zot_config.json"].data == b'{"storage": "old"}\n'
    assert by_name["etc_zot_credentials.env"].mode == 0o600


def test_mode_set_before_content(server: FakeServer, lines: list[str]) -> None:
    change.apply_change(server, task="t", files=wanted(), out=lines.append)
    modes = {
        upload.path.rsplit("/", 1)[1].split(".zot-hetzner")[0]: upload.mode_at_first_write
        for upload in server.uploads
    }
    assert modes == {".credentials.env": 0o600, ".config.json": 0o644}
    assert all(u.path.startswith("/etc/zot/.") for u in server.uploads), "temp not beside target"


def test_diff_shown_and_secret_masked(server: FakeServer, lines: list[str]) -> None:
    change.apply_change(server, task="t", files=wanted(), out=lines.append)
    output = "\n".join(lines)
    assert '-{"storage": "old"}' in output
    assert '+{"storage": "new"}' in output
    assert "(secret content changed)" in output
    assert SECRET_VALUE not in output
    assert "old-secret" not in output
    # The secret file is never read back for a diff.
    assert f"cat -- {CREDENTIALS}" not in server.commands


def test_secret_never_in_a_command(server: FakeServer, lines: list[str]) -> None:
    change.apply_change(server, task="t", files=wanted(), steps=[restart()], out=lines.append)
    for call in server.calls:
        assert SECRET_VALUE not in call.command
        assert SECRET_VALUE not in (call.stdin or "")


def test_second_run_reports_no_change(server: FakeServer, lines: list[str]) -> None:
    change.apply_change(server, task="t", files=wanted(), steps=[restart()], out=lines.append)
    before = len(server.calls)
    result = change.apply_change(
        server, task="t", files=wanted(), steps=[restart()], out=lines.append
    )
    assert not result.changed
    assert result.describe() == "no change"
    assert writes(FakeServer(calls=server.calls[before:])) == []
    assert server.units[layout.ZOT_UNIT]["NRestarts"] == "1"


def test_dry_run_probes_but_writes_nothing(server: FakeServer, lines: list[str]) -> None:
    snapshot = {p: (f.data, f.mode) for p, f in server.files.items()}
    result = change.apply_change(
        server, task="t", files=wanted(), steps=[restart()], dry_run=True, out=lines.append
    )
    assert result.changed
    assert result.dry_run
    assert result.describe().startswith("would change")
    assert writes(server) == []
    assert server.uploads == []
    assert {p: (f.data, f.mode) for p, f in server.files.items()} == snapshot
    assert "would restart zot.service" in lines


def test_mode_only_change_detected(server: FakeServer, lines: list[str]) -> None:
    server.files[CREDENTIALS].data = f"AWS_SECRET_ACCESS_KEY={SECRET_VALUE}\n".encode()
    server.files[CREDENTIALS].mode = 0o644
    server.files[CONFIG].data = b'{"storage": "new"}\n'
    result = change.apply_change(server, task="t", files=wanted(), out=lines.append)
    assert result.files == [CREDENTIALS]
    assert f"update {CREDENTIALS}: mode 0644 -> 0600" in lines
    assert server.files[CREDENTIALS].mode == 0o600


def test_always_changing_step_runs_without_file_change(
    server: FakeServer, lines: list[str]
) -> None:
    step = change.restart_step(layout.ZOT_UNIT, always_changes=True)
    result = change.apply_change(server, task="restart", steps=[step], out=lines.append)
    assert result.changed
    assert result.steps == ["restart zot.service"]
    assert server.units[layout.ZOT_UNIT]["NRestarts"] == "1"
    assert audit_lines(server)[-1]["changes"] == ["restart zot.service"]


def test_validation_failure_changes_nothing(server: FakeServer, lines: list[str]) -> None:
    server.on(r"^zot verify ", answer("", "invalid config: storage\n", 1))
    files = [DesiredFile(CONFIG, "{broken\n", 0o644, validator=lambda tmp: f"zot verify {tmp}")]
    with pytest.raises(RemoteError, match="nothing was changed") as raised:
        change.apply_change(server, task="t", files=files, steps=[restart()], out=lines.append)
    assert "invalid config" in str(raised.value)
    assert server.text(CONFIG) == '{"storage": "old"}\n'
    assert server.units[layout.ZOT_UNIT]["NRestarts"] == "0"
    assert not [p for p in server.files if ".zot-hetzner-" in p]


def test_failed_check_rolls_back(server: FakeServer, lines: list[str]) -> None:
    checks_run = []

    def failing_check(conn: object) -> None:
        checks_run.append(1)
        if len(checks_run) == 1:
            raise VerificationError("zot does not answer")

    with pytest.raises(RolledBackError) as raised:
        change.apply_change(
            server,
            task="set-s3-credentials",
            files=wanted(),
            steps=[restart()],
            checks=[Step("zot answers", action=failing_check)],
            out=lines.append,
        )
    message = str(raised.value)
    assert "zot does not answer" in message
    assert "back at its previous state" in message
    assert server.text(CONFIG) == '{"storage": "old"}\n'
    assert server.text(CREDENTIALS) == "AWS_SECRET_ACCESS_KEY=old-secret\n"
    assert server.files[CREDENTIALS].mode == 0o600
    # Restarted once for the change and once after the restore.
    assert server.units[layout.ZOT_UNIT]["NRestarts"] == "2"
    assert len(checks_run) == 2
    assert audit_lines(server)[-1]["result"] == "rolled back"
    assert SECRET_VALUE not in message


def test_new_file_removed_on_rollback(server: FakeServer, lines: list[str]) -> None:
    new = DesiredFile("/etc/zot/extra.json", "{}\n", 0o644)
    failing = Step("fails", action=lambda conn: (_ for _ in ()).throw(VerificationError("no")))
    with pytest.raises(RolledBackError):
        change.apply_change(server, task="t", files=[new], checks=[failing], out=lines.append)
    assert "/etc/zot/extra.json" not in server.files


def test_check_still_failing_after_rollback_is_reported(
    server: FakeServer, lines: list[str]
) -> None:
    failing = Step(
        "zot answers", action=lambda conn: (_ for _ in ()).throw(VerificationError("down"))
    )
    with pytest.raises(RolledBackError, match="checks still fail after the rollback"):
        change.apply_change(
            server, task="t", files=wanted(), steps=[restart()], checks=[failing], out=lines.append
        )


def test_failed_restore_prints_manual_commands(server: FakeServer, lines: list[str]) -> None:
    restarts = []

    def restart_handler(argv: list[str], stdin: str | None) -> tuple[str, str, int]:
        restarts.append(1)
        return "", "Job for zot.service failed.\n", 1

    server.on(r"^systemctl restart", restart_handler)
    with pytest.raises(RestoreFailedError) as raised:
        change.apply_change(server, task="t", files=wanted(), steps=[restart()], out=lines.append)
    message = str(raised.value)
    assert "To restore by hand" in message
    assert f"cp -a -T -- {layout.BACKUP_DIR}/" in message
    assert "systemctl restart -- zot.service" in message
    assert SECRET_VALUE not in message
    assert len(restarts) == 2


def test_connection_lost_after_rename_reconnects_and_rolls_back(
    server: FakeServer, lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change, "RECONNECT_PAUSE", 0)
    dropped = []

    def drop_on_restart(command: str) -> None:
        if command.startswith("systemctl restart") and not dropped:
            dropped.append(command)
            server.connected = False
            raise paramiko.SSHException("Server connection dropped")

    server.before_run = drop_on_restart
    with pytest.raises(RolledBackError, match="SSH connection to server-1 failed") as raised:
        change.apply_change(server, task="t", files=wanted(), steps=[restart()], out=lines.append)
    assert "back at its previous state" in str(raised.value)
    assert server.closed >= 1
    assert server.text(CONFIG) == '{"storage": "old"}\n'
    assert server.units[layout.ZOT_UNIT]["NRestarts"] == "1"
    assert any("reconnecting" in line for line in lines)


def test_connection_never_back_gives_manual_commands(
    server: FakeServer, lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change, "RECONNECT_PAUSE", 0)

    def drop(command: str) -> None:
        if command.startswith("systemctl restart") or dropped:
            dropped.append(command)
            raise EOFError("gone")

    dropped: list[str] = []
    server.before_run = drop
    with pytest.raises(RestoreFailedError, match="To restore by hand"):
        change.apply_change(server, task="t", files=wanted(), steps=[restart()], out=lines.append)
    assert len(dropped) <= 1 + change.RECONNECT_ATTEMPTS * 3


def test_audit_line_without_secrets(server: FakeServer, lines: list[str]) -> None:
    change.apply_change(
        server, task="set-s3-credentials", files=wanted(), steps=[restart()], out=lines.append
    )
    entry = audit_lines(server)[-1]
    assert entry["task"] == "set-s3-credentials"
    assert entry["result"] == "changed"
    assert entry["host"] == "server-1"
    assert entry["changes"] == [
        f"updated {CONFIG}",
        f"updated {CREDENTIALS}",
        "restart zot.service",
    ]
    assert "@" in entry["operator"]
    assert entry["time"].endswith("Z")
    assert SECRET_VALUE not in server.text(layout.AUDIT_LOG)


def test_old_backups_pruned(
    server: FakeServer, lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change, "KEEP_BACKUPS", 2)
    for number in range(4):
        change.apply_change(server, task="t", files=wanted(config=f"{number}\n"), out=lines.append)
    kept = {p.split("/")[5] for p in server.files if p.startswith(layout.BACKUP_DIR + "/")}
    assert len(kept) == 2


def test_temp_path_beside_target() -> None:
    assert (
        change.temp_path("/etc/caddy/Caddyfile", "ab12")
        == "/etc/caddy/.Caddyfile.zot-hetzner-ab12.tmp"
    )


def test_restart_step_command() -> None:
    assert change.restart_step("caddy.service").command == commands.systemctl(
        "restart", "caddy.service"
    )
