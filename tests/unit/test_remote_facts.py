"""Parsing of probe output, and probes against the fake server."""

from __future__ import annotations

import json

import pytest

from ops.errors import RemoteError
from ops.remote import checks, facts
from ops.secrets import Secret

from .remote_fakes import FakeServer, answer

DIGEST = "a" * 64


def test_file_state_parsed() -> None:
    state = facts.parse_file_state("/etc/zot/htpasswd", f"640 root zot\n{DIGEST}  -\n")
    assert state == facts.FileState("/etc/zot/htpasswd", True, 0o640, "root", "zot", DIGEST)


def test_file_state_absent() -> None:
    assert facts.parse_file_state("/x", "absent\n") == facts.FileState("/x", False)


def test_file_state_garbage_rejected() -> None:
    with pytest.raises(RemoteError, match="unexpected output"):
        facts.parse_file_state("/x", "644 root root\n")
    with pytest.raises(RemoteError, match="unexpected sha256sum"):
        facts.parse_file_state("/x", "644 root root\nnot-a-digest  -\n")


def test_unit_state_parsed() -> None:
    text = (
        "ActiveState=active\nSubState=running\nUnitFileState=enabled\nNRestarts=3\n"
        "ActiveEnterTimestamp=Mon 2025-01-06 10:00:00 UTC\nResult=success\nExecMainStatus=0\n"
    )
    state = facts.parse_unit_state("zot.service", text)
    assert state.is_active
    assert state.sub == "running"
    assert state.enabled == "enabled"
    assert state.restarts == 3
    assert state.active_since == "Mon 2025-01-06 10:00:00 UTC"


def test_unit_state_of_missing_unit() -> None:
    state = facts.parse_unit_state("nope.service", "ActiveState=inactive\nNRestarts=\n")
    assert not state.is_active
    assert state.restarts is None
    assert state.enabled == "unknown"


def test_container_inspect_parsed() -> None:
    text = json.dumps(
        [
            {
                "Image": "f" * 64,
                "ImageName": "ghcr.io/project-zot/zot-linux-amd64:v2.1.14",
                "State": {"Running": True, "StartedAt": "2025-01-06T10:00:00Z"},
                "Config": {"Labels": {"io.containers.autoupdate": "registry"}},
            }
        ]
    )
    state = facts.parse_container_inspect("zot", text)
    assert state.exists
    assert state.running
    assert state.image == "ghcr.io/project-zot/zot-linux-amd64:v2.1.14"
    assert state.labels == {"io.containers.autoupdate": "registry"}


def test_container_missing() -> None:
    server = FakeServer()
    server.on(r"^podman container inspect", answer("[]\n", "Error: no such container zot\n", 125))
    assert facts.container_state(server, "zot") == facts.ContainerState("zot", False)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("v2.7.6 h1:T+yOt5q8X0pJ0eGkk5Xb4lWd0m+3k8zI0nY=\n", "2.7.6"),
        ("2.6.2\n", "2.6.2"),
        ("v2.8.0-beta.1 h1:abc\n", "2.8.0-beta.1"),
        ("caddy: command not found\n", None),
    ],
)
def test_version_parsed(text: str, version: str | None) -> None:
    assert facts.parse_version(text) == version


def test_checksum_line_found() -> None:
    text = (
        f"{'1' * 128}  caddy_2.7.6_linux_amd64.tar.gz\n"
        f"{'2' * 128}  caddy_2.7.6_linux_arm64.tar.gz\n"
        f"{'3' * 128}  caddy_2.7.6_linux_arm64.tar.gz.sig\n"
    )
    assert facts.parse_checksum_line(text, "caddy_2.7.6_linux_arm64.tar.gz") == "2" * 128
    assert facts.parse_checksum_line(text, "caddy_2.7.6_linux_riscv64.tar.gz") is None


def test_http_status_sends_credentials_on_stdin() -> None:
    server = FakeServer()
    server.on(r"^curl ", answer("401"))
    code = facts.http_status(
        server, "http://127.0.0.1:5000/v2/", credentials=("admin", Secret('p"w\\x'))
    )
    assert code == 401
    call = server.calls[0]
    assert 'p"w' not in call.command
    assert call.stdin == 'user = "admin:p\\"w\\\\x"\n'


def test_curl_user_config_is_masked() -> None:
    config = facts.curl_user_config("admin", Secret("hunter2"))
    assert "hunter2" not in str(config)
    assert "hunter2" not in repr(config)


def test_architecture_rejects_unknown() -> None:
    server = FakeServer()
    server.on(r"^dpkg", answer("riscv64\n"))
    with pytest.raises(RemoteError, match="riscv64"):
        facts.architecture(server)


def test_wait_http_times_out_with_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "POLL_INTERVAL", 0)
    server = FakeServer()
    server.on(r"^curl ", answer("000"))
    with pytest.raises(Exception, match=r"returned no response after 0 s; expected 200 or 401"):
        checks.wait_http(server, "http://127.0.0.1:5000/v2/", {200, 401}, timeout=0)


def test_wait_unit_active_polls_until_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "POLL_INTERVAL", 0)
    server = FakeServer()
    server.add_unit("zot.service", active="activating", sub="start")
    probes = 0

    def show(argv: list[str], stdin: str | None) -> tuple[str, str, int]:
        nonlocal probes
        probes += 1
        active = "active\nSubState=running" if probes >= 3 else "activating\nSubState=start"
        return f"ActiveState={active}\nNRestarts=0\n", "", 0

    server.on(r"^systemctl show", show)
    state = checks.wait_unit_active(server, "zot.service", timeout=5)
    assert state.is_active
    assert probes == 3
