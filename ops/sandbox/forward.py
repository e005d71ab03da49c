"""Loopback-only TCP forwarders between this machine and a guest's network namespace.

Two directions, both built from socat with one child per connection:

- to the guest: socat listens on this machine's 127.0.0.1:PORT, and each
  connection's child enters the guest's network namespace with nsenter and
  connects to the guest's 127.0.0.1:GUEST_PORT (sshd, Caddy, zot);
- to the host: socat listens inside the guest's namespace on 127.0.0.1. Each
  connection's child enters this machine's namespace through a saved handle
  and connects to a service on this machine's loopback. The stand-ins for the
  image registry, the Caddy release server, S3 and the apt proxy run there.

Neither side ever listens on anything but a loopback address.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .system import ProcessId, SandboxError, stop_group, tail, wait_until

TO_GUEST = "to-guest"
TO_HOST = "to-host"
LISTEN_TIMEOUT = 5.0
# The network namespace of this process, i.e. of this machine.
HOST_NETNS = Path("/proc/self/ns/net")
PORT_ATTEMPTS = 5


@dataclass(frozen=True)
class Forwarder:
    """One running socat listener: where it listens, where it connects, and its process."""

    direction: str
    # On this machine's loopback for TO_GUEST, on the guest's loopback for TO_HOST.
    listen_port: int
    target_port: int
    process: ProcessId

    def to_json(self) -> dict[str, object]:
        return {
            "direction": self.direction,
            "listen_port": self.listen_port,
            "target_port": self.target_port,
            "process": self.process.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict) -> Forwarder:
        return cls(
            direction=data["direction"],
            listen_port=int(data["listen_port"]),
            target_port=int(data["target_port"]),
            process=ProcessId.from_json(data["process"]),
        )

    def stop(self) -> None:
        """End the listener and every per-connection child (they share its process group)."""
        stop_group(self.process)


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the caller binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_ports(tcp_table: Path) -> set[int]:
    """Return the ports in LISTEN state on 127.0.0.1 in a /proc/.../net/tcp table."""
    ports = set()
    for line in tcp_table.read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        if fields[3] == "0A" and address == "0100007F":
            ports.add(int(port, 16))
    return ports


def _socat_exec(netns: Path, port: int) -> str:
    # socat parses this address itself: the inner address is quoted, because
    # its colons would otherwise end the EXEC command line.
    return f'EXEC:nsenter --net={netns} socat STDIO "TCP:127.0.0.1:{port}"'


def _start(argv: list[str], log: Path) -> tuple[ProcessId, subprocess.Popen]:
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    return ProcessId.of(process.pid), process


def _same_netns(pid: int, netns: Path) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns).st_ino
    except FileNotFoundError:
        return False


def _wait_listening(
    process: subprocess.Popen,
    netns: Path,
    port: int,
    step: str,
    log: Path,
) -> bool:
    """Wait until socat listens on `port` inside `netns`.

    Returns False when socat exited because the port was taken; raises
    SandboxError on any other exit and on timeout.
    """
    tcp_table = Path(f"/proc/{process.pid}/net/tcp")

    def ready() -> bool:
        if process.poll() is not None:
            return True
        # Until nsenter has switched namespaces, the table is still the caller's.
        if not _same_netns(process.pid, netns):
            return False
        try:
            return port in listening_ports(tcp_table)
        except FileNotFoundError:
            return False

    if not wait_until(ready, LISTEN_TIMEOUT, interval=0.02):
        raise SandboxError(f"{step}: socat did not listen on port {port} within {LISTEN_TIMEOUT} s")
    if process.poll() is not None:
        if "Address already in use" in log.read_text(errors="replace"):
            return False
        raise SandboxError(f"{step}: socat exited {process.returncode}: {tail(log.read_text())}")
    return True


def forward_to_guest(guest_netns: Path, guest_port: int, log: Path) -> Forwarder:
    """Listen on a free port of this machine's 127.0.0.1 and forward to the guest's 127.0.0.1:guest_port."""
    step = f"forward to guest port {guest_port}"
    for _ in range(PORT_ATTEMPTS):
        port = free_loopback_port()
        argv = [
            "socat",
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
            _socat_exec(guest_netns, guest_port),
        ]
        identity, process = _start(argv, log)
        if _wait_listening(process, HOST_NETNS, port, step, log):
            return Forwarder(TO_GUEST, port, guest_port, identity)
    raise SandboxError(f"{step}: no free port on 127.0.0.1 after {PORT_ATTEMPTS} attempts")


def forward_to_host(
    guest_netns: Path, host_netns: Path, host_port: int, guest_port: int, log: Path
) -> Forwarder:
    """Listen on the guest's 127.0.0.1:guest_port and forward to this machine's 127.0.0.1:host_port."""
    step = f"expose host port {host_port} as guest port {guest_port}"
    argv = [
        "nsenter",
        f"--net={guest_netns}",
        "socat",
        f"TCP-LISTEN:{guest_port},bind=127.0.0.1,reuseaddr,fork",
        _socat_exec(host_netns, host_port),
    ]
    identity, process = _start(argv, log)
    # nsenter execs socat without forking, so the pid is the listener's.
    if not _wait_listening(process, guest_netns, guest_port, step, log):
        raise SandboxError(f"{step}: port {guest_port} is already in use inside the guest")
    return Forwarder(TO_HOST, guest_port, host_port, identity)


def stop_all(forwarders: list[Forwarder]) -> None:
    for forwarder in forwarders:
        forwarder.stop()


__all__ = [
    "TO_GUEST",
    "TO_HOST",
    "Forwarder",
    "forward_to_guest",
    "forward_to_host",
    "free_loopback_port",
    "listening_ports",
    "stop_all",
]
