"""A small SSH server on 127.0.0.1 built on paramiko, for connection tests.

It accepts one public key, answers each exec request with REPLIES[command]
(or exit status 127), and keeps a list of the commands it received. It is
enough to test host key pinning, login and keepalive without a real sshd.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import paramiko

from tests.conftest import write_ssh_keypair


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: LoopbackSSHServer) -> None:
        self.server = server
        self.command: bytes | None = None
        self.exec_ready = threading.Event()

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.server.user and key == self.server.authorized_key:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return (
            paramiko.OPEN_SUCCEEDED
            if kind == "session"
            else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        )

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.command = command
        self.exec_ready.set()
        return True


class LoopbackSSHServer:
    def __init__(
        self,
        host_key: paramiko.PKey,
        authorized_key: paramiko.PKey,
        user: str = "root",
        port: int = 0,
    ) -> None:
        self.host_key = host_key
        self.authorized_key = authorized_key
        self.user = user
        self.replies: dict[str, tuple[str, int]] = {}
        self.commands: list[str] = []
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port))
        self.socket.listen(8)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.stopping = threading.Event()
        self.transports: list[paramiko.Transport] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.socket.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

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
            interface.exec_ready.wait(5)
            command = (interface.command or b"").decode()
            interface.exec_ready.clear()
            self.commands.append(command)
            output, status = self.replies.get(command, ("", 127))
            channel.sendall(output.encode())
            channel.send_exit_status(status)
            channel.close()

    def stop(self) -> None:
        self.stopping.set()
        for transport in self.transports:
            transport.close()
        self.socket.close()
        self.thread.join(5)


def ed25519_key(folder: Path, name: str) -> tuple[paramiko.Ed25519Key, Path]:
    """Generate an Ed25519 key pair in FOLDER; return the paramiko key and the private key's path."""
    public = write_ssh_keypair(folder, name)
    private = public.with_suffix("")
    return paramiko.Ed25519Key(filename=str(private)), private
