"""Target selection and host key pinning against a loopback SSH server."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from ops.errors import ConfigError, RemoteError
from ops.remote import connect
from ops.remote.connect import HostKeyMismatchError, Target

from .ssh_server import LoopbackSSHServer, ed25519_key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.5", [Target("203.0.113.5", "203.0.113.5", 22)]),
        (
            "a.example.com:2222, b.example.com",
            [
                Target("a.example.com", "a.example.com", 2222),
                Target("b.example.com", "b.example.com", 22),
            ],
        ),
        ("[2001:db8::1]:2200", [Target("2001:db8::1", "2001:db8::1", 2200)]),
        ("2001:db8::1", [Target("2001:db8::1", "2001:db8::1", 22)]),
        ("[::1]", [Target("::1", "::1", 22)]),
    ],
)
def test_parse_hosts(value: str, expected: list[Target]) -> None:
    assert connect.parse_hosts(value, 22) == expected


@pytest.mark.parametrize(
    "value", ["", " , ", "h:0", "h:99999", "h:ssh", "[::1", "[::1]x", "a b", "u@h"]
)
def test_parse_hosts_rejects(value: str) -> None:
    with pytest.raises(ConfigError):
        connect.parse_hosts(value, 22)


def test_known_hosts_name() -> None:
    assert Target("a", "198.51.100.7", 22).known_hosts_name == "198.51.100.7"
    assert Target("a", "::1", 2222).known_hosts_name == "[::1]:2222"


def test_targets_from_servers_json(state_dir: Path) -> None:
    folder = state_dir / "registry"
    folder.mkdir(parents=True)
    (folder / "servers.json").write_text(
        json.dumps(
            {
                "servers": [
                    {"name": "registry-1", "ipv4": "198.51.100.7", "ipv6": "2001:db8::1", "id": 1},
                    {"name": "registry-2", "ipv4": None, "ipv6": "2001:db8::2", "id": 2},
                    {
                        "name": "local",
                        "ipv4": "10.0.0.2",
                        "ssh_host": "127.0.0.1",
                        "ssh_port": 40022,
                    },
                ]
            }
        )
    )
    assert connect.select_targets("registry", 2222, None) == [
        Target("registry-1", "198.51.100.7", 2222),
        Target("registry-2", "2001:db8::2", 2222),
        Target("local", "127.0.0.1", 40022),
    ]
    assert connect.select_targets("registry", 22, "h:2") == [Target("h", "h", 2)]


def test_no_servers_recorded(state_dir: Path) -> None:
    with pytest.raises(ConfigError, match="run deploy first or name servers with --host"):
        connect.select_targets("registry", 22, None)


@pytest.fixture
def keys(tmp_path: Path) -> dict:
    host_key, _ = ed25519_key(tmp_path, "host_key")
    other_host_key, _ = ed25519_key(tmp_path, "other_host_key")
    client_key, client_path = ed25519_key(tmp_path, "client_key")
    return {
        "host": host_key,
        "other": other_host_key,
        "client": client_key,
        "client_path": client_path,
    }


@pytest.fixture
def sshd(keys: dict) -> Iterator[LoopbackSSHServer]:
    server = LoopbackSSHServer(keys["host"], keys["client"])
    server.replies["echo ok"] = ("ok\n", 0)
    yield server
    server.stop()


def open_connection(
    server: LoopbackSSHServer, keys: dict, known_hosts: Path
) -> connect.PinnedConnection:
    target = Target("sandbox", "127.0.0.1", server.port)
    return connect.connect(
        target,
        user="root",
        private_key=keys["client_path"],
        known_hosts=known_hosts,
        connect_timeout=5,
        keepalive=7,
        allow_agent=False,
    )


def test_first_contact_pins_key(
    sshd: LoopbackSSHServer, keys: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keepalives: list[int] = []
    original = paramiko.Transport.set_keepalive

    def record(transport: paramiko.Transport, interval: int) -> None:
        keepalives.append(interval)
        original(transport, interval)

    monkeypatch.setattr(paramiko.Transport, "set_keepalive", record)
    known_hosts = tmp_path / "state" / "known_hosts"
    conn = open_connection(sshd, keys, known_hosts)
    try:
        assert conn.run("echo ok", hide=True, in_stream=False).stdout == "ok\n"
        assert keepalives == [7]
    finally:
        conn.close()
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    entry = known_hosts.read_text().split()
    assert entry[0] == f"[127.0.0.1]:{sshd.port}"
    assert entry[1] == "ssh-ed25519"
    assert entry[2] == keys["host"].get_base64()


def test_pinned_key_accepted_again(sshd: LoopbackSSHServer, keys: dict, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    for _ in range(2):
        conn = open_connection(sshd, keys, known_hosts)
        try:
            conn.run("echo ok", hide=True, in_stream=False)
        finally:
            conn.close()
    assert len(known_hosts.read_text().splitlines()) == 1


def test_changed_key_rejected(keys: dict, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    first = LoopbackSSHServer(keys["host"], keys["client"])
    first.replies["echo ok"] = ("ok\n", 0)
    try:
        conn = open_connection(first, keys, known_hosts)
        conn.run("echo ok", hide=True, in_stream=False)
        conn.close()
    finally:
        first.stop()
    # A rebuilt server on the same address and port, with a new host key.
    rebuilt = LoopbackSSHServer(keys["other"], keys["client"], port=first.port)
    rebuilt.replies["echo ok"] = ("ok\n", 0)
    try:
        conn = open_connection(rebuilt, keys, known_hosts)
        with pytest.raises(HostKeyMismatchError) as raised:
            conn.run("echo ok", hide=True, in_stream=False)
        assert rebuilt.commands == []
    finally:
        rebuilt.stop()
    message = str(raised.value)
    assert f"[127.0.0.1]:{first.port}" in message
    assert f"pinned {connect.fingerprint(keys['host'])}" in message
    assert f"presented {connect.fingerprint(keys['other'])}" in message
    assert f"ssh-keygen -R '[127.0.0.1]:{first.port}' -f {known_hosts}" in message
    assert keys["other"].get_base64() not in known_hosts.read_text()


def test_wrong_client_key_rejected(sshd: LoopbackSSHServer, keys: dict, tmp_path: Path) -> None:
    keys = dict(keys)
    _, keys["client_path"] = ed25519_key(tmp_path, "stranger")
    conn = open_connection(sshd, keys, tmp_path / "known_hosts")
    with pytest.raises(RemoteError, match=r"SSH login to root@127\.0\.0\.1:\d+ was rejected"):
        conn.run("echo ok", hide=True, in_stream=False)


def test_unreachable_port(keys: dict, tmp_path: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    conn = connect.connect(
        Target("gone", "127.0.0.1", port),
        user="root",
        private_key=keys["client_path"],
        known_hosts=tmp_path / "kh",
        connect_timeout=2,
        allow_agent=False,
    )
    with pytest.raises(connect.UnreachableError, match="failed"):
        conn.run("echo ok", hide=True, in_stream=False)


def test_user_ssh_config_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host *\n  User mallory\n  Port 2200\n  ProxyCommand false\n"
    )
    monkeypatch.setenv("HOME", str(home))
    conn = connect.connect(
        Target("s", "127.0.0.1", 22), user="root", private_key=None, known_hosts=tmp_path / "kh"
    )
    assert conn.user == "root"
    assert conn.port == 22
    assert "proxycommand" not in conn.ssh_config
    assert conn.client.get_host_keys().keys() == []
