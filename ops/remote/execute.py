"""Run commands and write files on one server through a Fabric connection.

Every remote call of the toolkit goes through run() or upload(). They hide
output, never read the local terminal and bound the time a command may take.
A failure becomes RemoteError with the command, its exit status and the tail
of its stderr, or ConnectionLostError when the SSH session itself broke.
"""

from __future__ import annotations

import io
import socket
from typing import Any

import paramiko
from invoke.exceptions import CommandTimedOut, ThreadException

from ..errors import RemoteError

# Seconds one command may run unless the caller gives another bound.
DEFAULT_TIMEOUT = 120
_STDERR_TAIL_LINES = 6
_TRANSPORT_ERRORS = (paramiko.SSHException, EOFError, socket.error, ThreadException)


class ConnectionLostError(RemoteError):
    """The SSH session to a server broke while a command or transfer was running."""


def host_of(conn: Any) -> str:
    return str(getattr(conn, "host", "server"))


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-_STDERR_TAIL_LINES:])


def run(
    conn: Any,
    command: str,
    *,
    stdin: str | None = None,
    check: bool = True,
    timeout: int | None = DEFAULT_TIMEOUT,
    out_stream: Any = None,
) -> Any:
    """Run COMMAND on the server behind CONN and return the invoke Result.

    STDIN, when given, is sent to the command's standard input and then
    closed; that is the only way a secret may reach a remote command. With
    CHECK, a non-zero exit status raises RemoteError. With OUT_STREAM, stdout
    is written there as it arrives (for logs --follow) instead of being hidden.
    TIMEOUT None lets the command run until it ends or the user presses Ctrl-C.
    """
    options: dict[str, Any] = {
        "warn": True,
        "hide": True,
        "timeout": timeout,
        "echo_stdin": False,
        "in_stream": io.StringIO(stdin) if stdin is not None else False,
    }
    if out_stream is not None:
        options["hide"] = "stderr"
        options["out_stream"] = out_stream
    try:
        result = conn.run(command, **options)
    except CommandTimedOut:
        raise RemoteError(
            f"command timed out after {timeout} s on {host_of(conn)}: {command}"
        ) from None
    except _TRANSPORT_ERRORS as error:
        raise ConnectionLostError(
            f"SSH connection to {host_of(conn)} failed while running {command!r}: "
            f"{type(error).__name__}: {error}"
        ) from None
    # Paramiko reports -1 when the channel closed without an exit status:
    # either the session broke, or the command was killed by a signal (sshd
    # then sends exit-signal instead of exit-status).
    if result.exited == -1 and not connection_alive(conn):
        raise ConnectionLostError(
            f"SSH connection to {host_of(conn)} closed while running {command!r}"
        )
    if check and result.exited == -1:
        raise RemoteError(
            f"command was killed by a signal on {host_of(conn)}: {command}\n"
            f"{_tail(result.stderr) or 'no output'}"
        )
    if check and result.exited != 0:
        detail = _tail(result.stderr) or _tail(result.stdout) or "no output"
        raise RemoteError(
            f"command failed on {host_of(conn)} with exit status {result.exited}: "
            f"{command}\n{detail}"
        )
    return result


def output(conn: Any, command: str, **kwargs: Any) -> str:
    """Run COMMAND, raise on failure, and return its stdout."""
    return run(conn, command, **kwargs).stdout


def upload(conn: Any, path: str, content: bytes, mode: int) -> None:
    """Create PATH over SFTP with MODE set before any content is written.

    The file is opened exclusively ("x"), so an existing file of that name is
    an error rather than overwritten, and chmod runs on the empty file, so a
    secret never sits in a file that others can read.
    """
    try:
        sftp = conn.sftp()
        with sftp.open(path, "wx") as handle:
            handle.chmod(mode)
            handle.write(content)
    except (paramiko.SSHException, EOFError) as error:
        raise ConnectionLostError(
            f"SSH connection to {host_of(conn)} failed while uploading {path}: "
            f"{type(error).__name__}: {error}"
        ) from None
    except OSError as error:
        kind = RemoteError if connection_alive(conn) else ConnectionLostError
        raise kind(
            f"upload of {path} to {host_of(conn)} failed: {type(error).__name__}: "
            f"{error.strerror or error}"
        ) from None


def connection_alive(conn: Any) -> bool:
    """Return False when CONN has an SSH transport that is no longer active."""
    transport = getattr(conn, "transport", None)
    return transport is None or bool(transport.is_active())
