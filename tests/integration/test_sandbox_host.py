"""The local Debian 12 sandbox host: boot, cloud-init, ssh, forwarders and a clean teardown."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from ops.sandbox import SandboxError, boot, list_hosts
from ops.sandbox.forward import listening_ports
from ops.sandbox.system import cgroup_pids, descendants, mount_points, netns_names

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SSH_TIMEOUT = 60
CLOUD_INIT_TIMEOUT = 180


def _ready(host):
    host.wait_for_ssh(SSH_TIMEOUT)
    status = host.wait_for_cloud_init(CLOUD_INIT_TIMEOUT)
    assert status.status == "done", status.long_output
    assert status.errors == []
    return status


def _host_listeners(port: int) -> set[str]:
    """Return the local addresses this machine listens on for `port` (IPv4 and IPv6 tables)."""
    addresses = set()
    for table in (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                addresses.add(address)
    return addresses


def test_boot_applies_user_data(sandbox_host_factory):
    factory = sandbox_host_factory
    user_data = factory.user_data(
        write_files=[
            {
                "path": "/etc/zot-sandbox-test.conf",
                "content": "written by cloud-init\n",
                "permissions": "0640",
            }
        ],
        runcmd=[["sh", "-c", "echo ran > /root/runcmd-marker"]],
    )
    host = factory(user_data)
    _ready(host)

    with host.connection() as connection:
        assert connection.run("id -un", hide=True).stdout == "root\n"
        assert connection.run("hostname", hide=True).stdout.strip() == host.name
        written = connection.run("cat /etc/zot-sandbox-test.conf", hide=True)
        assert written.stdout == "written by cloud-init\n"
        mode = connection.run("stat -c %a /etc/zot-sandbox-test.conf", hide=True)
        assert mode.stdout.strip() == "640"
        assert connection.run("cat /root/runcmd-marker", hide=True).stdout == "ran\n"
        state = connection.run("systemctl is-system-running --wait", hide=True, warn=True)
        assert state.stdout.strip() == "running", host.run("systemctl --failed").stdout
        release = connection.run("cat /etc/debian_version", hide=True).stdout
        assert release.startswith("12.")

    for guest_port, local_port in host.ports.items():
        assert guest_port in (22, 80, 443)
        assert _host_listeners(local_port) == {"0100007F"}


def test_golden_has_no_bootstrap_packages(sandbox_host_factory):
    host = sandbox_host_factory()
    _ready(host)
    for package in ("podman", "caddy", "ufw"):
        result = host.run(["dpkg-query", "-W", "-f", "${Status}", package], check=False)
        assert "install ok installed" not in result.stdout, package
    for package in ("openssh-server", "cloud-init", "sudo", "python3", "locales", "curl"):
        result = host.run(["dpkg-query", "-W", "-f", "${Status}", package], check=False)
        assert result.stdout == "install ok installed", package
    assert "en_US.utf8" in host.run(["locale", "-a"]).stdout


def test_two_hosts_at_once(sandbox_host_factory):
    first = sandbox_host_factory()
    second = sandbox_host_factory()
    _ready(first)
    _ready(second)

    assert first.ssh_port != second.ssh_port
    ids = [host.run("cat /etc/machine-id").stdout.strip() for host in (first, second)]
    assert ids[0] != ids[1]
    assert all(len(machine_id) == 32 for machine_id in ids)
    assert first.host_keys() != second.host_keys()

    first.run("touch /root/only-on-first")
    assert second.run("test -e /root/only-on-first", check=False).returncode == 1

    for host, other in ((first, second), (second, first)):
        pids = cgroup_pids(Path(host.state.cgroups[0]))
        assert host.leader().pid in pids
        assert other.leader().pid not in pids
        with host.connection() as connection:
            assert connection.run("hostname", hide=True).stdout.strip() == host.name


def test_down_from_other_process_leaves_nothing(sandbox_host_factory):
    host = sandbox_host_factory(forwards=(22, 80, 443, 5000))
    _ready(host)
    host.expose_host_port(9, 10009)

    instance_dir = host.instance_dir
    runtime_dir = Path(host.state.runtime_dir)
    cgroups = [Path(path) for path in host.state.cgroups]
    forward_ports = list(host.ports.values())
    processes = [host.launcher, host.leader()] + [item.process for item in host.forwarders]
    guest_pids = set(descendants(host.launcher.pid))
    assert any(point.startswith(str(instance_dir)) for point in mount_points())
    assert host.state.netns in netns_names()

    # Keep an ssh session open, so a per-connection forwarder child exists too.
    connection = host.connection()
    connection.open()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "invoke", "sandbox.down", host.name],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        connection.close()
    assert result.returncode == 0, result.stdout + result.stderr

    mounts = mount_points()
    assert [point for point in mounts if point.startswith(str(instance_dir))] == []
    assert [point for point in mounts if point.startswith(str(runtime_dir))] == []
    assert host.state.netns not in netns_names()
    for cgroup in cgroups:
        assert not cgroup.exists(), cgroup
    for process in processes:
        assert not process.alive(), process
    for pid in guest_pids:
        state = Path(f"/proc/{pid}/stat")
        alive = state.exists() and state.read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
        assert not alive, pid
    host_ports = listening_ports(Path("/proc/self/net/tcp"))
    for port in forward_ports:
        assert port not in host_ports
    assert not instance_dir.exists()
    assert host.name not in [other.name for other in list_hosts()]
    if not any(other.status == "running" for other in list_hosts()):
        assert "/run/systemd/nspawn" not in mounts


class _TokenHandler(BaseHTTPRequestHandler):
    token = ""
    clients: ClassVar[list[str]] = []

    def do_GET(self):
        body = self.token.encode()
        self.clients.append(self.client_address[0])
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def test_expose_host_port_reaches_host_loopback(sandbox_host_factory):
    host = sandbox_host_factory()
    host.wait_for_ssh(SSH_TIMEOUT)

    handler = type("Handler", (_TokenHandler,), {"token": "sandbox-reverse-ok", "clients": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        guest_port = host.expose_host_port(server.server_address[1], 18080)
        assert guest_port == 18080
        result = host.run(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:18080/"])
        assert result.stdout == "sandbox-reverse-ok"
        assert handler.clients == ["127.0.0.1"]
    finally:
        server.shutdown()
        server.server_close()

    # The listener is inside the guest's namespace on loopback, not on this machine.
    assert 18080 not in listening_ports(Path("/proc/self/net/tcp"))
    guest_table = host.run("cat /proc/net/tcp").stdout
    assert f"0100007F:{18080:04X} 00000000:0000 0A" in guest_table


def test_reboot_comes_back(sandbox_host_factory):
    host = sandbox_host_factory()
    _ready(host)
    boot_id = host.run("cat /proc/sys/kernel/random/boot_id").stdout
    leader = host.leader()

    host.reboot(timeout=60)
    host.wait_for_ssh(SSH_TIMEOUT)

    assert host.leader() != leader
    assert host.run("cat /proc/sys/kernel/random/boot_id").stdout != boot_id
    assert host.status == "running"


def test_boot_rejects_bad_input(golden, tmp_path):
    with pytest.raises(SandboxError, match="invalid sandbox host name"):
        boot("Bad_Name", "#cloud-config\n", golden=golden)
    with pytest.raises(SandboxError, match="has no init"):
        boot("no-init", "#cloud-config\n", golden=tmp_path)
