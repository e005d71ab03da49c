"""logs, auto-update, status and restart against the fake server."""

from __future__ import annotations

import io
import json
import threading

import pytest

from ops import layout
from ops.config import Settings, parse_settings
from ops.daytwo import autoupdate, logs, service
from ops.errors import ConfigError, OpsError, VerificationError
from ops.remote.change import RolledBackError
from ops.remote.hosts import HostOutput

from .remote_fakes import FakeServer, answer, fast_checks, serve_zot

ZOT_INSPECT = json.dumps(
    [
        {
            "Image": "f" * 64,
            "ImageName": "ghcr.io/project-zot/zot-linux-amd64:v2.1.14",
            "State": {"Running": True, "StartedAt": "2025-01-06T10:00:00Z"},
            "Config": {"Labels": {"io.containers.autoupdate": "registry"}},
        }
    ]
)


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_checks(monkeypatch)


@pytest.fixture
def settings(base_settings: dict) -> Settings:
    return parse_settings(base_settings)


@pytest.fixture
def server() -> FakeServer:
    server = FakeServer()
    server.add_dir(layout.TOOLKIT_STATE_DIR)
    for unit in (layout.ZOT_UNIT, layout.CADDY_UNIT, layout.AUTOUPDATE_TIMER):
        server.add_unit(unit)
    server.add_unit(layout.AUTOUPDATE_SERVICE, active="inactive", sub="dead")
    server.on(r"^podman container inspect -- zot$", answer(ZOT_INSPECT))
    return server


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def out(stream: io.StringIO) -> HostOutput:
    return HostOutput("alpha", True, stream, threading.Lock())


@pytest.mark.parametrize(
    ("source", "since", "follow", "expected"),
    [
        ("zot", None, False, "journalctl --no-pager --output=short-iso -u zot.service -n 20"),
        (
            "caddy",
            "1 hour ago",
            True,
            "journalctl --no-pager --output=short-iso -u caddy.service -n 20 --since '1 hour ago' --follow",
        ),
        ("access", None, True, "tail -n 20 -F -- /var/log/caddy/access.log"),
        ("zot-log", None, False, "tail -n 20 -- /var/log/zot/zot.log"),
        ("audit", None, False, "tail -n 20 -- /var/log/zot-hetzner/audit.log"),
    ],
)
def test_log_commands(source: str, since: str | None, follow: bool, expected: str) -> None:
    assert logs.log_command(source, lines=20, since=since, follow=follow) == expected


def test_log_options_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown log"):
        logs.log_command("secrets", lines=1, since=None, follow=False)
    with pytest.raises(ConfigError, match="--since works with journal logs"):
        logs.log_command("access", lines=1, since="today", follow=False)
    with pytest.raises(ConfigError, match="negative"):
        logs.log_command("zot", lines=-1, since=None, follow=False)


def test_logs_prefixed_by_host(server: FakeServer, out: HostOutput, stream: io.StringIO) -> None:
    server.on(r"^journalctl ", answer("line one\nline two\n"))
    logs.show_logs(server, out, source="zot", lines=2, since=None, follow=False)
    assert stream.getvalue() == "[alpha] line one\n[alpha] line two\n"


def fake_exists_test(server: FakeServer) -> None:
    """Make `test -e PATH` exit 0 when the fake server has the file, else 1."""
    server.on(r"^test -e ", lambda argv, stdin: ("", "", 0 if argv[2] in server.files else 1))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("zot-log", "zot has not written /var/log/zot/zot.log yet"),
        ("zot-audit", "zot has not written /var/log/zot/audit.log yet"),
        ("access", "Caddy has not written /var/log/caddy/access.log yet"),
        ("audit", "the toolkit has not written /var/log/zot-hetzner/audit.log yet"),
    ],
)
def test_missing_log_file_is_a_note(
    server: FakeServer, out: HostOutput, stream: io.StringIO, source: str, expected: str
) -> None:
    fake_exists_test(server)
    result = logs.show_logs(server, out, source=source, lines=200, since=None, follow=False)
    assert result.status == "ok"
    assert result.message == expected
    assert stream.getvalue() == f"[alpha] {expected}\n"
    assert not [command for command in server.commands if command.startswith("tail ")]


def test_missing_log_file_followed(
    server: FakeServer, out: HostOutput, stream: io.StringIO
) -> None:
    fake_exists_test(server)
    server.on(r"^tail -n 5 -F -- /var/log/zot/audit\.log$", answer("first entry\n"))
    logs.show_logs(server, out, source="zot-audit", lines=5, since=None, follow=True)
    assert stream.getvalue().splitlines() == [
        "[alpha] zot has not written /var/log/zot/audit.log yet, waiting for it",
        "[alpha] first entry",
    ]


def test_existing_log_file_tailed(server: FakeServer, out: HostOutput, stream: io.StringIO) -> None:
    server.add_file(layout.ZOT_AUDIT_LOG, "entry\n")
    fake_exists_test(server)
    server.on(r"^tail -n 200 -- /var/log/zot/audit\.log$", answer("entry\n"))
    result = logs.show_logs(server, out, source="zot-audit", lines=200, since=None, follow=False)
    assert result.message == ""
    assert stream.getvalue() == "[alpha] entry\n"


def test_journal_logs_not_probed(server: FakeServer, out: HostOutput) -> None:
    server.on(r"^journalctl ", answer("line\n"))
    logs.show_logs(server, out, source="caddy", lines=1, since=None, follow=False)
    assert [command.split()[0] for command in server.commands] == ["journalctl"]


TRIGGER = "Mon 2025-01-06 00:00:03 UTC"
START = "Mon 2025-01-06 21:00:00 UTC"
END = "Mon 2025-01-06 21:00:01 UTC"


@pytest.mark.parametrize(
    ("timer", "service", "expected"),
    [
        ({"LastTriggerUSec": ""}, {"Result": "success"}, ["last run: never"]),
        (
            {"LastTriggerUSec": ""},
            {
                "ExecMainStartTimestamp": START,
                "ExecMainExitTimestamp": END,
                "Result": "success",
                "ExecMainStatus": "0",
            },
            [
                f"last run: started {START} (not by the timer, which has not fired yet)",
                f"last result: success (exit status 0, ended {END})",
            ],
        ),
        (
            {"LastTriggerUSec": TRIGGER},
            {
                "ExecMainStartTimestamp": START,
                "ExecMainExitTimestamp": END,
                "Result": "exit-code",
                "ExecMainStatus": "125",
            },
            [
                f"last run: started {START}",
                f"last result: exit-code (exit status 125, ended {END})",
            ],
        ),
        (
            {"LastTriggerUSec": TRIGGER},
            {"Result": "success"},
            [
                f"last run: none since boot (timer's last trigger: {TRIGGER})",
                "last result: unknown; see inv auto-update --journal",
            ],
        ),
        (
            {"LastTriggerUSec": TRIGGER},
            {"ExecMainStartTimestamp": START, "ActiveState": "activating"},
            [f"last run: started {START}", "last result: none yet, the run is activating"],
        ),
    ],
)
def test_autoupdate_last_run(
    timer: dict[str, str], service: dict[str, str], expected: list[str]
) -> None:
    assert autoupdate.last_run_lines(timer, service) == expected


def test_autoupdate_status_run_by_hand(
    server: FakeServer, out: HostOutput, stream: io.StringIO
) -> None:
    server.units[layout.AUTOUPDATE_TIMER]["LastTriggerUSec"] = ""
    server.units[layout.AUTOUPDATE_SERVICE]["ExecMainStartTimestamp"] = START
    server.units[layout.AUTOUPDATE_SERVICE]["ExecMainExitTimestamp"] = END
    autoupdate.status(server, out)
    text = stream.getvalue()
    assert "last run: never" not in text
    assert f"[alpha] last run: started {START}" in text
    assert f"ended {END}" in text


def test_autoupdate_status(server: FakeServer, out: HostOutput, stream: io.StringIO) -> None:
    result = autoupdate.status(server, out)
    assert result.status == "ok"
    assert "io.containers.autoupdate=registry is set on zot" in stream.getvalue()


def test_autoupdate_status_missing_label(server: FakeServer, out: HostOutput) -> None:
    inspect = json.loads(ZOT_INSPECT)
    inspect[0]["Config"]["Labels"] = {}
    server.handlers.clear()
    server.on(r"^podman container inspect", answer(json.dumps(inspect)))
    with pytest.raises(
        VerificationError, match=r"io\.containers\.autoupdate=\(unset\), expected registry"
    ):
        autoupdate.status(server, out)


def test_autoupdate_dry_run_lists_pending(
    server: FakeServer, out: HostOutput, stream: io.StringIO
) -> None:
    report = [
        {"Unit": "zot.service", "Image": "ghcr.io/x:v1", "Policy": "registry", "Updated": "pending"}
    ]
    server.on(r"^podman auto-update --dry-run --format json$", answer(json.dumps(report)))
    result = autoupdate.dry_run(server, out)
    assert result.message == "1 pending"
    assert "zot.service: ghcr.io/x:v1 policy registry, updated: pending" in stream.getvalue()
    assert layout.LOCK_DIR not in server.dirs


def test_autoupdate_run_updates_and_checks(server: FakeServer, out: HostOutput) -> None:
    serve_zot(server)
    report = [
        {"Unit": "zot.service", "Image": "ghcr.io/x:v1", "Policy": "registry", "Updated": "true"}
    ]
    server.on(r"^podman auto-update --format json$", answer(json.dumps(report)))
    result = autoupdate.run_now(server, out)
    assert result.status == "changed"
    assert any(c.startswith("curl ") for c in server.commands)
    entry = json.loads(server.text(layout.AUDIT_LOG).splitlines()[-1])
    assert entry["task"] == "auto-update"
    assert layout.LOCK_DIR not in server.dirs


def test_autoupdate_run_failure_reported(server: FakeServer, out: HostOutput) -> None:
    serve_zot(server)
    report = [
        {"Unit": "zot.service", "Image": "ghcr.io/x:v1", "Policy": "registry", "Updated": "failed"}
    ]
    server.on(
        r"^podman auto-update --format json$", answer(json.dumps(report), "rolled back\n", 125)
    )
    with pytest.raises(OpsError, match="podman auto-update failed"):
        autoupdate.run_now(server, out)
    assert layout.LOCK_DIR not in server.dirs


def test_restart_always_changes(server: FakeServer, out: HostOutput, settings: Settings) -> None:
    serve_zot(server)
    for expected in ("1", "2"):
        result = service.restart(server, out, settings=settings, service="zot")
        assert result.status == "changed"
        assert result.message == "restart zot.service"
        assert server.units[layout.ZOT_UNIT]["NRestarts"] == expected
    assert server.units[layout.CADDY_UNIT]["NRestarts"] == "0"


def test_restart_dry_run(server: FakeServer, out: HostOutput, settings: Settings, stream) -> None:
    result = service.restart(server, out, settings=settings, service="both", dry_run=True)
    assert result.status == "would change"
    assert result.message == "restart zot.service, restart caddy.service"
    assert server.units[layout.ZOT_UNIT]["NRestarts"] == "0"
    assert "would restart caddy.service" in stream.getvalue()


def test_restart_failure_named(server: FakeServer, out: HostOutput, settings: Settings) -> None:
    server.on(r"^curl .* https://", answer("000"))
    with pytest.raises(
        RolledBackError, match=r"at 'check: Caddy responds at https://registry\.example\.com/v2/'"
    ):
        service.restart(server, out, settings=settings, service="caddy")
    assert layout.LOCK_DIR not in server.dirs


def test_restart_rejects_unknown_service(
    server: FakeServer, out: HostOutput, settings: Settings
) -> None:
    with pytest.raises(ConfigError, match="zot, caddy or both"):
        service.restart(server, out, settings=settings, service="sshd")


def test_status_healthy(server: FakeServer, out: HostOutput, settings: Settings, stream) -> None:
    serve_zot(server)
    server.on(r"^curl .* https://", answer("401"))
    server.on(r"^/usr/local/bin/caddy version$", answer("v2.8.4 h1:x\n"))
    server.add_file(
        layout.AUDIT_LOG,
        json.dumps({"time": "T", "task": "restart", "operator": "me@here", "result": "changed"})
        + "\n",
    )
    server.on(r"^tail -n 1 -- ", lambda argv, stdin: (server.text(layout.AUDIT_LOG), "", 0))
    result = service.status(server, out, settings=settings)
    text = stream.getvalue()
    assert result.status == "ok"
    assert "[alpha] zot.service: active/running, enabled" in text
    assert "version: 2.8.4" in text
    assert "change lock: free" in text
    assert "last change: T restart by me@here: changed" in text


def test_status_unhealthy_fails(server: FakeServer, out: HostOutput, settings: Settings) -> None:
    serve_zot(server)
    server.units[layout.ZOT_UNIT]["ActiveState"] = "failed"
    server.on(r"^curl .* https://", answer("000"))
    server.on(r"^/usr/local/bin/caddy version$", answer("v2.8.4 h1:x\n"))
    server.on(r"^tail -n 1 -- ", answer("", "", 1))
    with pytest.raises(VerificationError, match="zot is not serving; Caddy is not serving HTTPS"):
        service.status(server, out, settings=settings)
