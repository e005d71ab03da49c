"""diagnose end to end over SSH to this machine, the report formats and the exit code."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import paramiko
import pytest

from ops.diagnose import remote, report, run
from ops.diagnose.result import CheckResult
from ops.errors import RemoteError
from ops.remote.connect import Target, connect, parse_hosts
from tests.unit.ssh_server import LoopbackSSHServer, _Interface, ed25519_key


class ExecSSHServer(LoopbackSSHServer):
    """An SSH server on 127.0.0.1 that runs each exec request with bash on this machine.

    It reads the channel's stdin to end-of-file, runs the command with that
    input, and sends back stdout, stderr and the exit status. It counts the
    channels it accepted, so a test can tell how many round trips a task made.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.channels = 0
        self.lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _serve(self, client: socket.socket) -> None:
        transport = paramiko.Transport(client)
        self.transports.append(transport)
        transport.add_server_key(self.host_key)
        interface = _Interface(self)
        try:
            transport.start_server(server=interface)
        except (paramiko.SSHException, EOFError, OSError):
            return
        while not self.stopping.is_set() and transport.is_active():
            channel = transport.accept(timeout=0.5)
            if channel is None:
                continue
            with self.lock:
                self.channels += 1
            interface.exec_ready.wait(5)
            command = (interface.command or b"").decode()
            interface.exec_ready.clear()
            self.commands.append(command)
            stdin = bytearray()
            while chunk := channel.recv(65536):
                stdin += chunk
            completed = subprocess.run(
                ["bash", "-c", command], input=bytes(stdin), capture_output=True, timeout=240
            )
            channel.sendall(completed.stdout)
            channel.sendall_stderr(completed.stderr)
            channel.send_exit_status(completed.returncode)
            channel.close()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    host_key, _ = ed25519_key(tmp_path, "host")
    client_key, client_path = ed25519_key(tmp_path, "client")
    return {"host": host_key, "client": client_key, "client_path": client_path}


@pytest.fixture
def sshd(keys: dict[str, Any]):
    server = ExecSSHServer(keys["host"], keys["client"])
    yield server
    server.stop()


def connector(keys: dict[str, Any], tmp_path: Path):
    def make(target: Target):
        return connect(
            target,
            user="root",
            private_key=keys["client_path"],
            known_hosts=tmp_path / "known_hosts",
            allow_agent=False,
            connect_timeout=5,
        )

    return make


class Settings:
    """The settings fields diagnose reads."""

    name = "diagnose-unit"
    domain = "cr.example.test"
    tls = "internal"
    acme_staging = False

    class storage:
        bucket = "zot-bucket"
        endpoint = "https://fsn1.your-objectstorage.com"


def no_dns(domain: str) -> dict[str, Any]:
    return {"ipv4": [], "ipv6": [], "error": "not looked up in tests"}


def test_probe_runs_in_one_exec_request(sshd: ExecSSHServer, keys, tmp_path: Path):
    conn = connector(keys, tmp_path)(Target("here", "127.0.0.1", sshd.port))
    try:
        facts = remote.run_probe(conn, remote.probe_params("cr.example.test"))
    finally:
        conn.close()
    assert facts["probe_version"] == 1
    assert sshd.channels == 1
    assert len(sshd.commands) == 1
    assert sshd.commands[0].startswith("python3 - ")


def test_failing_remote_python_raises_remote_error(sshd: ExecSSHServer, keys, tmp_path: Path):
    conn = connector(keys, tmp_path)(Target("here", "127.0.0.1", sshd.port))
    original = remote.probe_command
    try:
        remote.probe_command = lambda params: "echo 'no python here' >&2; exit 127"
        with pytest.raises(RemoteError, match="exit status 127; install python3"):
            remote.run_probe(conn, {})
    finally:
        remote.probe_command = original
        conn.close()


def test_diagnose_reports_each_host_in_order(sshd: ExecSSHServer, keys, tmp_path: Path, state_dir):
    targets = parse_hosts(f"127.0.0.1:{sshd.port},127.0.0.1:{closed_port()}", 22)
    env = run.Environment(connect=connector(keys, tmp_path), resolver=no_dns)
    reports = run.diagnose(Settings(), targets, env)

    assert [r.address for r in reports] == ["127.0.0.1", "127.0.0.1"]
    probed, unreachable = reports
    assert [r.name for r in probed.results][:3] == ["probe", "cloud-init", "bootstrap"]
    assert probed.facts is not None
    assert sshd.channels == 1
    assert [r.name for r in unreachable.results] == ["ssh"]
    assert unreachable.results[0].status == "fail"
    assert f"root@127.0.0.1:{targets[1].port}" in unreachable.results[0].evidence
    assert run.exit_code(reports) == 1


def test_cloud_firewall_skipped_without_token(sshd, keys, tmp_path: Path, state_dir):
    targets = parse_hosts(f"127.0.0.1:{sshd.port}", 22)
    env = run.Environment(connect=connector(keys, tmp_path), resolver=no_dns)
    (only,) = run.diagnose(Settings(), targets, env)
    firewall = next(r for r in only.results if r.name == "cloud-firewall")
    assert firewall.status == "skip"
    assert "HCLOUD_TOKEN" in firewall.evidence


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- expectations ----------------------------------------------------------------------


def test_expectations_use_servers_json_record():
    targets = [Target("web-1", "127.0.0.1", 2222), Target("web-2", "203.0.113.11", 22)]
    servers = [
        {
            "name": "web-1",
            "id": 7,
            "ipv4": "203.0.113.10",
            "ipv6": "2001:db8:1::/64",
            "ssh_host": "127.0.0.1",
        },
        {"name": "web-2", "id": 8, "ipv4": "203.0.113.11", "ipv6": None},
    ]
    expect, record = run.expectations_for(Settings(), targets[0], targets, servers)
    assert record is not None and record["id"] == 7
    assert expect.recorded_addresses == {"127.0.0.1", "203.0.113.10", "2001:db8:1::1"}
    assert {"203.0.113.11", "2001:db8:1::1"} <= expect.deployment_addresses


# --- reports ---------------------------------------------------------------------------


def host(name: str, *results: CheckResult) -> run.HostReport:
    return run.HostReport(name=name, address="203.0.113.10", results=results)


OK = CheckResult("dns", "ok", "resolves to this server")
WARN = CheckResult("reboot", "warn", "a reboot is pending", "updates", "systemctl reboot", "server")
FAIL = CheckResult(
    "ufw", "fail", "ufw blocks 443/tcp", "clients cannot reach Caddy", "ufw allow 443/tcp", "server"
)
SKIP = CheckResult("zot-http", "skip", "connection refused", after=("zot-service",))


@pytest.mark.parametrize(
    ("reports", "warn_fails", "code"),
    [
        ([host("a", OK)], False, 0),
        ([host("a", OK, WARN)], False, 0),
        ([host("a", OK, WARN)], True, 1),
        ([host("a", OK), host("b", FAIL)], False, 1),
        ([host("a", SKIP)], True, 0),
    ],
)
def test_exit_code(reports, warn_fails: bool, code: int):
    assert run.exit_code(reports, warn_fails) == code


def test_text_report_shows_cause_and_fix_under_problems():
    text = report.render_text([host("registry", OK, WARN, FAIL, SKIP)])
    lines = text.splitlines()
    assert lines[0] == "registry (203.0.113.10): 1 failed, 1 warnings, 1 ok, 1 skipped"
    assert lines[1] == "  ok    dns       resolves to this server"
    assert lines[2] == "  WARN  reboot    a reboot is pending"
    assert lines[3] == " " * 18 + "cause: updates"
    assert lines[5] == "  FAIL  ufw       ufw blocks 443/tcp"
    assert lines[6] == " " * 18 + "cause: clients cannot reach Caddy"
    assert lines[7] == " " * 18 + "fix (on the server): ufw allow 443/tcp"
    assert lines[8] == "  skip  zot-http  connection refused (follows from zot-service)"
    assert lines[-1] == "diagnose: 1 host, problems on registry"


def test_text_report_without_problems():
    text = report.render_text([host("a", OK), host("b", OK)])
    assert text.splitlines()[-1] == "diagnose: 2 hosts, all checks passed"


def test_json_report_for_monitoring():
    document = json.loads(report.render_json([host("registry", OK, FAIL, SKIP)], warn_fails=True))
    assert document["exit_code"] == 1
    assert document["warn_fails"] is True
    (only,) = document["hosts"]
    assert only["status"] == "fail"
    assert only["counts"] == {"ok": 1, "warn": 0, "fail": 1, "skip": 1}
    assert only["checks"][1] == {
        "name": "ufw",
        "status": "fail",
        "evidence": "ufw blocks 443/tcp",
        "cause": "clients cannot reach Caddy",
        "fix": "ufw allow 443/tcp",
        "where": "server",
        "after": [],
    }
    assert only["checks"][2]["after"] == ["zot-service"]


# --- the Invoke task -------------------------------------------------------------------


def task_context(base_settings: dict) -> Any:
    from invoke import Config, Context

    return Context(Config(overrides={"deployment": base_settings}))


def test_task_prints_json_and_exits_one(
    sshd: ExecSSHServer, keys, tmp_path: Path, state_dir, base_settings, monkeypatch, capsys
):
    from invoke.exceptions import Exit

    from ops.diagnose import tasks

    def environment(settings, secrets=None):
        return run.Environment(connect=connector(keys, tmp_path), resolver=no_dns)

    monkeypatch.setattr(run, "default_environment", environment)
    with pytest.raises(Exit) as raised:
        tasks.diagnose.body(task_context(base_settings), host=f"127.0.0.1:{sshd.port}", json=True)
    assert raised.value.code == 1
    document = json.loads(capsys.readouterr().out)
    assert document["exit_code"] == 1
    assert document["hosts"][0]["checks"][0]["name"] == "probe"
    assert sshd.channels == 1


def test_task_reports_missing_servers(state_dir, base_settings):
    from invoke.exceptions import Exit

    from ops.diagnose import tasks

    with pytest.raises(Exit) as raised:
        tasks.diagnose.body(task_context(base_settings))
    assert raised.value.code == 1
    assert "run deploy first" in str(raised.value.message)
