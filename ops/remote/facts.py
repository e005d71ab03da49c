"""Read-only probes of a server, parsed into plain data.

Each probe runs one command from `commands` and hands its output to a pure
parse_* function, so parsing is tested without a server. Probes change
nothing, which is why a dry run runs them for real.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import RemoteError
from ..secrets import Secret
from . import commands
from .execute import host_of, output, run

UNIT_PROPERTIES = (
    "ActiveState",
    "SubState",
    "UnitFileState",
    "NRestarts",
    "ActiveEnterTimestamp",
    "Result",
    "ExecMainStatus",
)
TIMER_PROPERTIES = (
    "ActiveState",
    "UnitFileState",
    "LastTriggerUSec",
    "NextElapseUSecRealtime",
    "Result",
)
_VERSION = re.compile(r"^v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?)")


@dataclass(frozen=True)
class FileState:
    """A file's mode, owner and SHA-256, or exists=False."""

    path: str
    exists: bool
    mode: int | None = None
    owner: str | None = None
    group: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class UnitState:
    """The systemd properties of one unit that the tasks report and check."""

    unit: str
    active: str
    sub: str
    enabled: str
    restarts: int | None
    active_since: str
    result: str
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def is_active(self) -> bool:
        return self.active == "active"


@dataclass(frozen=True)
class ContainerState:
    """What `podman container inspect` reports about one container."""

    name: str
    exists: bool
    running: bool = False
    image: str | None = None
    image_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    started_at: str | None = None


def parse_file_state(path: str, text: str) -> FileState:
    lines = [line for line in text.splitlines() if line.strip()]
    if lines == [commands.ABSENT]:
        return FileState(path=path, exists=False)
    if len(lines) != 2:
        raise RemoteError(f"unexpected output from the file probe of {path}: {text.strip()!r}")
    mode, owner, group = lines[0].split()
    digest = lines[1].split()[0]
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise RemoteError(f"unexpected sha256sum output for {path}: {lines[1]!r}")
    return FileState(
        path=path, exists=True, mode=int(mode, 8), owner=owner, group=group, sha256=digest
    )


def parse_properties(text: str) -> dict[str, str]:
    """Parse `systemctl show` KEY=VALUE lines."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def parse_unit_state(unit: str, text: str) -> UnitState:
    values = parse_properties(text)
    restarts = values.get("NRestarts", "")
    return UnitState(
        unit=unit,
        active=values.get("ActiveState", "unknown"),
        sub=values.get("SubState", "unknown"),
        enabled=values.get("UnitFileState", "") or "unknown",
        restarts=int(restarts) if restarts.isdigit() else None,
        active_since=values.get("ActiveEnterTimestamp", ""),
        result=values.get("Result", ""),
        properties=values,
    )


def parse_container_inspect(name: str, text: str) -> ContainerState:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise RemoteError(f"podman inspect of {name} did not return JSON") from None
    if isinstance(data, list):
        if not data:
            return ContainerState(name=name, exists=False)
        data = data[0]
    config = data.get("Config") or {}
    state = data.get("State") or {}
    return ContainerState(
        name=name,
        exists=True,
        running=bool(state.get("Running")),
        image=data.get("ImageName") or config.get("Image"),
        image_id=data.get("Image"),
        labels=dict(config.get("Labels") or {}),
        started_at=state.get("StartedAt"),
    )


def parse_version(text: str) -> str | None:
    """Return "2.7.6" from Caddy's `v2.7.6 h1:...` output, or None."""
    match = _VERSION.match(text.strip())
    return match.group(1) if match else None


def parse_checksum_line(text: str, filename: str) -> str | None:
    """Return the hex digest listed for FILENAME in sha256sum/sha512sum-format TEXT."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == filename:
            return parts[0].lower()
    return None


def file_state(conn: Any, path: str) -> FileState:
    return parse_file_state(path, output(conn, commands.file_state(path)))


def read_file(conn: Any, path: str) -> str:
    return output(conn, commands.read_file(path))


def unit_state(conn: Any, unit: str, properties: tuple[str, ...] = UNIT_PROPERTIES) -> UnitState:
    return parse_unit_state(unit, output(conn, commands.unit_properties(unit, properties)))


def container_state(conn: Any, name: str) -> ContainerState:
    result = run(conn, commands.container_inspect(name), check=False)
    if result.exited != 0:
        if "no such container" in result.stderr.lower() or result.stdout.strip() in ("", "[]"):
            return ContainerState(name=name, exists=False)
        raise RemoteError(
            f"podman container inspect {name} failed on {host_of(conn)}: {result.stderr.strip()}"
        )
    return parse_container_inspect(name, result.stdout)


def program_version(conn: Any, binary: str) -> str | None:
    """Return the version BINARY reports, or None if it is missing or fails."""
    result = run(conn, commands.program_version(binary), check=False)
    if result.exited != 0:
        return None
    return parse_version(result.stdout)


def architecture(conn: Any) -> str:
    arch = output(conn, commands.architecture()).strip()
    if arch not in ("amd64", "arm64"):
        raise RemoteError(
            f"{host_of(conn)} reports architecture {arch!r}; only amd64 and arm64 are supported"
        )
    return arch


def http_status(
    conn: Any, url: str, *, credentials: tuple[str, Secret] | None = None, **options: Any
) -> int:
    """GET URL from the server itself and return the status code (0 when nothing responded).

    CREDENTIALS (user, password) go to curl as configuration on stdin, so the
    password never appears in curl's argv or the process list.
    """
    config = curl_user_config(*credentials) if credentials else None
    command = commands.http_status(url, config_on_stdin=config is not None, **options)
    result = run(conn, command, stdin=config.reveal() if config else None, check=False)
    code = result.stdout.strip()[-3:]
    return int(code) if code.isdigit() else 0


def curl_user_config(user: str, password: Secret) -> Secret:
    """Return curl configuration text that sets basic auth, quoted for curl's parser."""
    value = f"{user}:{password.reveal()}"
    for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        value = value.replace(raw, escaped)
    return Secret(f'user = "{value}"\n')
