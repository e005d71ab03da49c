"""Run the probe on a server: one SSH channel, one exec request, one JSON reply.

The probe's source goes to `python3 -` on the channel's standard input,
followed by end-of-file. Its parameters (domain, paths, units, ports, and no
secret) are the single command-line argument. Invoke's stdin forwarding
sends one byte per 10 ms for a non-terminal stream, so this module writes to
the paramiko channel directly.
"""

from __future__ import annotations

import json
import select
import shlex
import time
from functools import cache
from pathlib import Path
from typing import Any

import paramiko

from .. import layout
from ..errors import RemoteError
from ..remote.execute import ConnectionLostError

# Seconds the whole probe may take; its own steps are bounded well below this.
PROBE_TIMEOUT = 240.0
# Seconds to wait for the server to accept a new channel.
CHANNEL_TIMEOUT = 15.0
# The probe reads logs of this many seconds back.
LOG_WINDOW = 24 * 3600
MAX_REPLY = 16 * 1024 * 1024
_STDERR_TAIL = 6


@cache
def probe_source() -> bytes:
    return Path(__file__).with_name("probe.py").read_bytes()


def probe_params(domain: str, log_window: int = LOG_WINDOW) -> dict[str, Any]:
    """Return the probe's parameters: what to look at on the server, from ops.layout."""
    return {
        "domain": domain,
        "units": {
            "zot": layout.ZOT_UNIT,
            "caddy": layout.CADDY_UNIT,
            "autoupdate_timer": layout.AUTOUPDATE_TIMER,
            "autoupdate_service": layout.AUTOUPDATE_SERVICE,
        },
        "container": layout.ZOT_CONTAINER,
        "zot": {
            "address": layout.ZOT_ADDRESS,
            "port": layout.ZOT_PORT,
            "config": layout.ZOT_CONFIG,
            "log": layout.ZOT_LOG,
            "htpasswd": layout.ZOT_HTPASSWD,
            "credentials": layout.ZOT_CREDENTIALS,
        },
        "caddy": {
            "binary": layout.CADDY_BINARY,
            "caddyfile": layout.CADDYFILE,
            "user": layout.CADDY_USER,
            "access_log": layout.CADDY_ACCESS_LOG,
            "http_port": 80,
            "https_port": 443,
        },
        "disk_paths": ["/", "/var/lib/containers", "/var/log"],
        "bootstrap_marker": layout.BOOTSTRAP_DONE_MARKER,
        "lock_dir": layout.LOCK_DIR,
        "log_window_seconds": log_window,
    }


def probe_command(params: dict[str, Any]) -> str:
    """Return the remote command line: python3 reading the probe from stdin, PARAMS as argument."""
    return "python3 - " + shlex.quote(json.dumps(params, sort_keys=True, separators=(",", ":")))


def run_probe(
    conn: Any, params: dict[str, Any], *, timeout: float = PROBE_TIMEOUT
) -> dict[str, Any]:
    """Run the probe on CONN's server and return its facts.

    Raises RemoteError when the probe exits non-zero or prints something other
    than JSON, and ConnectionLostError when the SSH session breaks.
    """
    host = getattr(conn, "host", "server")
    conn.open()
    try:
        channel = conn.transport.open_session(timeout=CHANNEL_TIMEOUT)
    except (paramiko.SSHException, EOFError, OSError) as error:
        raise ConnectionLostError(f"could not open an SSH channel to {host}: {error}") from None
    try:
        stdout, stderr, status = _exchange(channel, probe_command(params), probe_source(), timeout)
    except TimeoutError:
        raise RemoteError(
            f"the diagnose probe on {host} did not finish within {timeout:.0f} s"
        ) from None
    except (paramiko.SSHException, EOFError, OSError) as error:
        raise ConnectionLostError(
            f"SSH connection to {host} failed during diagnose: {error}"
        ) from None
    finally:
        channel.close()
    tail = "\n".join(stderr.decode("utf-8", "replace").strip().splitlines()[-_STDERR_TAIL:])
    if status != 0:
        hint = "; install python3 on the server" if status == 127 else ""
        raise RemoteError(
            f"the diagnose probe failed on {host} with exit status {status}{hint}\n{tail}".rstrip()
        )
    try:
        facts = json.loads(stdout)
    except ValueError:
        raise RemoteError(
            f"the diagnose probe on {host} printed no JSON document\n{tail}".rstrip()
        ) from None
    if not isinstance(facts, dict):
        raise RemoteError(f"the diagnose probe on {host} printed JSON that is not an object")
    return facts


def _exchange(
    channel: paramiko.Channel, command: str, stdin: bytes, timeout: float
) -> tuple[bytes, bytes, int]:
    """Execute COMMAND, send STDIN and end-of-file, and collect stdout, stderr and exit status."""
    deadline = time.monotonic() + timeout
    channel.exec_command(command)
    channel.sendall(stdin)
    channel.shutdown_write()
    stdout, stderr = bytearray(), bytearray()
    while True:
        while channel.recv_ready():
            stdout += channel.recv(65536)
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(65536)
        if len(stdout) + len(stderr) > MAX_REPLY:
            raise RemoteError(f"the diagnose probe printed more than {MAX_REPLY} bytes")
        pending = channel.recv_ready() or channel.recv_stderr_ready()
        # Leave once the exit status is in and stdout reached end-of-file, so no late data is lost.
        if channel.exit_status_ready() and not pending and (channel.eof_received or channel.closed):
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        # The channel's file descriptor turns readable on data, stderr data and close.
        select.select([channel], [], [], min(remaining, 1.0))
    return bytes(stdout), bytes(stderr), channel.recv_exit_status()
