"""Bring a freshly booted (or existing) server to a working registry over SSH.

This is the part of deploy that runs after the server exists: wait for SSH,
pin its host key, wait for cloud-init, upload the secrets, start zot, check
DNS before Caddy asks for a certificate, and finish when the registry answers
over HTTPS as a registry with authentication should. Every step checks the
current state first, so running it again on a working server changes nothing.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import htpasswd, layout, state
from .config import Settings
from .errors import OpsError, RemoteError
from .progress import Progress
from .remote import checks, facts
from .remote.change import DesiredFile, Step, apply_change, restart_step
from .remote.commands import caddy_validate, systemctl
from .remote.connect import (
    KNOWN_HOSTS_FILE,
    HostKeyMismatchError,
    PinnedConnection,
    Target,
    UnreachableError,
    connect_for,
)
from .remote.execute import run
from .remote.lock import change_lock
from .render import DeploymentSecrets, RenderedFile, render_credentials
from .secrets import Secret

# Root certificate of Caddy's internal CA (tls internal), in the caddy
# user's XDG data directory.
CADDY_LOCAL_ROOT_CERT = f"{layout.CADDY_HOME}/.local/share/caddy/pki/authorities/local/root.crt"
POLL_SECONDS = 2.0


class DeployTimeoutError(OpsError):
    """A deploy stage did not finish within its time bound."""


@dataclass
class ServerRecord:
    """A server that deploy works on, and how to reach it from here."""

    name: str
    ipv4: str | None
    ipv6: str | None
    ssh_host: str
    ssh_port: int
    created: bool = False
    id: int | str | None = None
    # (address, port) to connect to for https://DOMAIN when DNS cannot be used,
    # e.g. a local host behind a loopback forwarder. None: resolve DOMAIN.
    https_endpoint: tuple[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_state(self) -> dict[str, Any]:
        data = {"name": self.name, "id": self.id, "ipv4": self.ipv4, "ipv6": self.ipv6}
        if self.ssh_host not in (self.ipv4, self.ipv6):
            data["ssh_host"] = self.ssh_host
        data["ssh_port"] = self.ssh_port
        if self.https_endpoint:
            data["https_endpoint"] = list(self.https_endpoint)
        data.update(self.extra)
        return data


@dataclass
class Timeouts:
    """Upper bounds, in seconds, of the waits of a deploy."""

    ssh: float = 300
    cloud_init: float = 1500
    zot: float = 180
    dns: float = 600
    https: float = 300


@dataclass
class ConvergeResult:
    changes: list[str]
    registry_url: str


def _target(record: ServerRecord) -> Target:
    return Target(name=record.name, address=record.ssh_host, port=record.ssh_port)


def forget_host_key(settings: Settings, target: Target) -> None:
    """Drop the pinned key of TARGET: a server deploy just created has new keys.

    Hetzner reuses addresses, so a new server can get the address of an old
    one; its first contact after creation is the new first contact.
    """
    path = state.deployment_dir(settings.name) / KNOWN_HOSTS_FILE
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [
        line for line in lines if target.known_hosts_name not in line.split(" ", 1)[0].split(",")
    ]
    if kept != lines:
        state.write_private(path, "".join(kept))


@contextlib.contextmanager
def _quiet_paramiko() -> Iterator[None]:
    """Keep paramiko from printing a traceback for each refused attempt while a server boots."""
    logger = logging.getLogger("paramiko")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def wait_for_ssh(
    settings: Settings, record: ServerRecord, progress: Progress, timeout: float
) -> PinnedConnection:
    """Open an SSH session, retrying while the server boots; pin its key on first contact."""
    with _quiet_paramiko():
        return _wait_for_ssh(settings, record, progress, timeout)


def _wait_for_ssh(
    settings: Settings, record: ServerRecord, progress: Progress, timeout: float
) -> PinnedConnection:
    target = _target(record)
    progress.stage(f"waiting for SSH on {target.address}:{target.port}")
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        conn = connect_for(settings, target)
        conn.connect_timeout = min(15, max(1, int(deadline - time.monotonic())))
        try:
            conn.open()
            progress.done("connected")
            return conn
        except HostKeyMismatchError:
            raise
        except (UnreachableError, RemoteError) as error:
            # Before cloud-init installs the key, logins are rejected; both
            # that and a refused connection mean "not yet".
            last_error = error
            conn.close()
        if time.monotonic() >= deadline:
            raise DeployTimeoutError(
                f"no SSH session to {target.address}:{target.port} after {timeout:.0f} s "
                f"({last_error}). Check the server's console in the Hetzner Console; "
                "inv deploy continues from here when run again"
            )
        progress.waiting(str(last_error).split(";")[0])
        time.sleep(POLL_SECONDS)


def _cloud_init_status(conn: Any) -> dict[str, Any]:
    """Return cloud-init's status as a dict ({"status": ..., "errors": [...]})."""
    result = run(conn, "cloud-init status --format json", check=False, timeout=60)
    try:
        return json.loads(result.stdout)
    except ValueError:
        # cloud-init 22.4 without --format support prints `status: done`.
        text = run(conn, "cloud-init status --long", check=False, timeout=60).stdout
        status = "running"
        for line in text.splitlines():
            if line.startswith("status:"):
                status = line.partition(":")[2].strip()
        return {"status": status, "errors": [], "raw": text}


def wait_for_cloud_init(conn: Any, progress: Progress, timeout: float) -> dict[str, Any]:
    """Wait until cloud-init has finished; raise with its errors when it failed."""
    progress.stage("waiting for cloud-init to finish the first boot")
    ok, status = checks.poll(
        lambda: _cloud_init_status(conn),
        lambda value: value.get("status") in ("done", "error", "degraded done", "disabled"),
        timeout=timeout,
        interval=POLL_SECONDS,
    )
    if not ok:
        raise DeployTimeoutError(
            f"cloud-init still reports {status.get('status')!r} after {timeout:.0f} s; follow "
            "it with: inv logs --service cloud-init (or tail -f /var/log/cloud-init-output.log "
            "on the server), then run inv deploy again"
        )
    bootstrap = run(conn, f"cat {layout.BOOTSTRAP_DONE_MARKER}", check=False).stdout.strip()
    try:
        marker = json.loads(bootstrap) if bootstrap else {}
    except ValueError:
        marker = {}
    if status.get("status") != "done" or status.get("errors") or marker.get("result") != "done":
        tail = run(conn, "tail -n 15 /var/log/cloud-init-output.log", check=False).stdout
        reason = (
            marker.get("reason")
            or "; ".join(map(str, status.get("errors") or []))
            or status.get("status")
        )
        raise OpsError(
            f"the first boot failed: {reason}. Last lines of /var/log/cloud-init-output.log:\n"
            f"{tail.rstrip()}\nFix the cause, then destroy and deploy again (user data runs "
            "only on the first boot)"
        )
    progress.done("cloud-init finished without errors")
    return status


def reconcile_htpasswd(
    current_text: str | None,
    passwords: dict[str, Secret],
    unknown: frozenset[str] = frozenset(),
) -> tuple[str, set[str]]:
    """Return htpasswd content for PASSWORDS and the users whose server hash was kept.

    bcrypt salts every hash anew, so hashing again would change the file on
    every run; keeping a verified hash makes a second deploy change nothing.
    Users in UNKNOWN got a password generated just now, because none was
    known here. When the server already has a hash for such a user, that
    hash is kept, so a lost local state does not lock the user out.
    """
    current = htpasswd.parse(current_text) if current_text else {}
    entries = {}
    kept = set()
    for user, password in passwords.items():
        existing = current.get(user)
        if existing and user in unknown:
            entries[user] = existing
            kept.add(user)
        elif existing and htpasswd.verify(password, existing):
            entries[user] = existing
        else:
            entries[user] = htpasswd.hash_password(password)
    return htpasswd.format_entries(entries), kept


def _read_optional(conn: Any, path: str) -> str | None:
    state_now = facts.file_state(conn, path)
    if not state_now.exists:
        return None
    return facts.read_file(conn, path)


def zot_answers(conn: Any, timeout: float) -> None:
    """Wait until zot on 127.0.0.1:5000 responds 401, as a registry with logins should."""
    url = f"http://{layout.ZOT_ADDRESS}:{layout.ZOT_PORT}/v2/"
    checks.wait_http(conn, url, {401}, timeout=timeout)


def upload_secrets(
    conn: Any,
    secrets: DeploymentSecrets,
    passwords: dict[str, Secret],
    progress: Progress,
    timeouts: Timeouts,
    unknown: frozenset[str] = frozenset(),
    before_upload: Callable[[set[str]], None] | None = None,
) -> list[str]:
    """Put the S3 credentials and htpasswd on the server, then make sure zot runs.

    BEFORE_UPLOAD is called with the users whose server hash was kept (see
    reconcile_htpasswd) before anything is written.
    """
    progress.stage("uploading secrets and starting zot")
    credentials = RenderedFile(
        layout.ZOT_CREDENTIALS, render_credentials(secrets), 0o600, secret=True
    )
    current_htpasswd = _read_optional(conn, layout.ZOT_HTPASSWD)
    htpasswd_text, kept = reconcile_htpasswd(current_htpasswd, passwords, unknown)
    for user in sorted(kept):
        progress.line(
            f"the password of registry user {user} is not known here; the server's is kept "
            f"(set ZOT_PASSWORD_{user.upper().replace('-', '_').replace('.', '_')} or use "
            "inv rotate-password to change it)"
        )
    if before_upload is not None:
        before_upload(kept)
    htpasswd_file = RenderedFile(layout.ZOT_HTPASSWD, htpasswd_text, 0o600, secret=True)
    zot_check = Step(
        description="zot answers on 127.0.0.1:5000",
        action=lambda connection: zot_answers(connection, timeouts.zot),
    )
    with change_lock(conn, "deploy", out=progress.line):
        result = apply_change(
            conn,
            task="deploy",
            files=[
                DesiredFile.from_rendered(credentials),
                DesiredFile.from_rendered(htpasswd_file),
            ],
            steps=[restart_step(layout.ZOT_UNIT)],
            checks=[zot_check],
            out=progress.line,
        )
    changes = [f"uploaded {path}" for path in result.files]
    unit = facts.unit_state(conn, layout.ZOT_UNIT)
    if unit.active != "active":
        run(conn, systemctl("start", layout.ZOT_UNIT), timeout=int(timeouts.zot) + 30)
        changes.append("started zot")
    checks.wait_unit_active(conn, layout.ZOT_UNIT, timeout=timeouts.zot)
    zot_answers(conn, timeouts.zot)
    progress.done("zot answers on 127.0.0.1:5000" + ("" if changes else " (no change)"))
    return changes


# Rendered files grouped by the service that reads them; a change restarts that service.
ZOT_FILES = (layout.ZOT_CONFIG, layout.ZOT_UNIT_PATH, layout.CONTAINERS_REGISTRIES_DROPIN)
CADDY_FILES = (layout.CADDYFILE, layout.CADDY_UNIT_PATH)


def sync_files(
    conn: Any, files: dict[str, RenderedFile], progress: Progress, timeouts: Timeouts
) -> list[str]:
    """Bring the server's configuration files in line with the current settings.

    The first boot wrote them from the user data; later edits of invoke.yaml
    reach an existing server only this way. Each group changes atomically
    and rolls back when its service does not come back. Caddy is restarted
    only when it runs, because deploy starts it later, after the DNS check.
    """
    progress.stage("comparing the server's configuration files with the settings")
    daemon_reload = Step(description="reload systemd units", command="systemctl daemon-reload")
    caddy_file = files[layout.CADDYFILE]
    groups = [
        (
            [files[path] for path in ZOT_FILES if path in files],
            [daemon_reload, restart_step(layout.ZOT_UNIT)],
            [
                Step(
                    description="zot answers on 127.0.0.1:5000",
                    action=lambda connection: zot_answers(connection, timeouts.zot),
                )
            ],
        ),
        (
            [files[path] for path in CADDY_FILES],
            [
                daemon_reload,
                Step(
                    description=f"restart {layout.CADDY_UNIT} if it runs",
                    command=systemctl("try-restart", layout.CADDY_UNIT),
                ),
            ],
            [],
        ),
        (
            [
                file
                for path, file in files.items()
                if path not in ZOT_FILES and path not in CADDY_FILES and not file.secret
            ],
            [Step(description="reload sshd", command="sshd -t && systemctl reload ssh.service")],
            [],
        ),
    ]
    changes: list[str] = []
    with change_lock(conn, "deploy", out=progress.line):
        for group, steps, group_checks in groups:
            desired = [
                DesiredFile.from_rendered(
                    file,
                    validator=(lambda temp: caddy_validate(layout.CADDY_BINARY, temp))
                    if file is caddy_file
                    else None,
                )
                for file in group
            ]
            result = apply_change(
                conn,
                task="deploy",
                files=desired,
                steps=steps,
                checks=group_checks,
                out=progress.line,
            )
            changes += [f"updated {path}" for path in result.files]
    progress.done(f"{len(changes)} file(s) updated" if changes else "up to date (no change)")
    return changes


def resolve(domain: str) -> set[str]:
    try:
        infos = socket.getaddrinfo(domain, 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return set()
    return {info[4][0] for info in infos}


def wait_for_dns(
    settings: Settings,
    record: ServerRecord,
    progress: Progress,
    timeout: float,
    resolver: Callable[[str], set[str]] = resolve,
) -> None:
    """Wait until the domain resolves to this server; Caddy needs that for ACME.

    Asking Let's Encrypt for a certificate while the records point elsewhere
    fails validation and soon hits its rate limit, so deploy stops here
    instead and names the records to create.
    """
    expected = {address for address in (record.ipv4, record.ipv6) if address}
    progress.stage(f"checking that {settings.domain} points at this server")

    def records_text() -> str:
        wanted = []
        if record.ipv4:
            wanted.append(f"A {settings.domain} -> {record.ipv4}")
        if record.ipv6:
            wanted.append(f"AAAA {settings.domain} -> {record.ipv6}")
        return "; ".join(wanted)

    ok, seen = checks.poll(
        lambda: resolver(settings.domain),
        lambda addresses: bool(addresses) and addresses <= expected,
        timeout=timeout,
        interval=POLL_SECONDS * 5,
    )
    if not ok:
        found = ", ".join(sorted(seen)) or "nothing"
        raise OpsError(
            f"{settings.domain} resolves to {found}, not to this server. Create the DNS "
            f"records {records_text()}, wait for them to propagate, then run inv deploy again "
            "(the server is kept; Caddy has not asked for a certificate yet)"
        )
    progress.done(f"{settings.domain} resolves to {', '.join(sorted(seen))}")


def report_caddy_version(conn: Any, wanted: str, progress: Progress) -> None:
    """Say when the Caddy on the server is not the configured release; deploy does not swap binaries."""
    installed = facts.program_version(conn, layout.CADDY_BINARY)
    if installed and installed != wanted:
        progress.line(
            f"note: Caddy {installed} runs on the server, the settings name {wanted}; "
            f"run inv upgrade-caddy --version {wanted}, or set deployment.caddy.version: "
            f'"{installed}" to keep it'
        )


def start_caddy(conn: Any, progress: Progress, timeout: float) -> list[str]:
    progress.stage("starting Caddy")
    unit = facts.unit_state(conn, layout.CADDY_UNIT)
    if unit.active == "active":
        progress.done("already running (no change)")
        return []
    run(conn, caddy_validate(layout.CADDY_BINARY, layout.CADDYFILE), timeout=60)
    run(conn, systemctl("start", layout.CADDY_UNIT), timeout=90)
    checks.wait_unit_active(conn, layout.CADDY_UNIT, timeout=timeout)
    progress.done("running")
    return ["started caddy"]


def https_status(
    domain: str, endpoint: tuple[str, int] | None, ca_pem: str | None, timeout: float = 10
) -> tuple[int, str]:
    """GET https://DOMAIN/v2/ from here and return (status, WWW-Authenticate header).

    With ENDPOINT the TCP connection goes there, but SNI and certificate
    checks still use DOMAIN. With CA_PEM that CA is the only one trusted.
    """
    context = ssl.create_default_context()
    if ca_pem:
        context = ssl.create_default_context(cadata=ca_pem)
    host, port = endpoint or (domain, 443)
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        wrapped = context.wrap_socket(raw, server_hostname=domain)
    except BaseException:
        raw.close()
        raise
    connection = http.client.HTTPSConnection(domain, port, timeout=timeout, context=context)
    connection.sock = wrapped
    try:
        connection.request("GET", "/v2/", headers={"Host": domain})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("WWW-Authenticate") or ""
    finally:
        connection.close()


def wait_for_https(
    settings: Settings, record: ServerRecord, conn: Any, progress: Progress, timeout: float
) -> None:
    """Wait until https://DOMAIN/v2/ responds 401 with a Basic challenge, over valid TLS."""
    progress.stage(f"waiting for {settings.registry_url}/v2/ to answer")
    ca_pem = None
    if settings.tls == "internal":
        ok, ca_pem = checks.poll(
            lambda: _read_optional(conn, CADDY_LOCAL_ROOT_CERT),
            lambda text: bool(text),
            timeout=timeout,
            interval=POLL_SECONDS,
        )
    last = "no answer"
    endpoint = record.https_endpoint
    if endpoint is None and settings.tls == "internal":
        # No public DNS name to resolve: reach the server by its address, with SNI.
        endpoint = (record.ipv4 or record.ipv6 or record.ssh_host, 443)

    def probe() -> bool:
        nonlocal last
        try:
            status, challenge = https_status(settings.domain, endpoint, ca_pem)
        except (OSError, ssl.SSLError, http.client.HTTPException) as error:
            last = f"{type(error).__name__}: {error}"
            progress.waiting(last)
            return False
        last = f"HTTP {status}"
        return status == 401 and challenge.lower().startswith("basic")

    ok, _ = checks.poll(probe, bool, timeout=timeout, interval=POLL_SECONDS)
    if not ok:
        raise DeployTimeoutError(
            f"{settings.registry_url}/v2/ did not respond 401 with a Basic challenge within "
            f"{timeout:.0f} s (last: {last}). Certificate problems show in: inv logs --service caddy"
        )
    progress.done("answers 401 with a Basic challenge over valid TLS")


def converge(
    settings: Settings,
    record: ServerRecord,
    secrets: DeploymentSecrets,
    passwords: dict[str, Secret],
    progress: Progress,
    timeouts: Timeouts | None = None,
    check_dns: bool = True,
    files: dict[str, RenderedFile] | None = None,
    unknown: frozenset[str] = frozenset(),
    before_upload: Callable[[set[str]], None] | None = None,
    caddy_version: str | None = None,
) -> ConvergeResult:
    """Take the server in RECORD from "booting" to "registry answers over HTTPS".

    FILES are the rendered non-secret files; when given, the server's copies
    are brought in line with them first.
    """
    timeouts = timeouts or Timeouts()
    if record.created:
        forget_host_key(settings, _target(record))
    conn = wait_for_ssh(settings, record, progress, timeouts.ssh)
    try:
        wait_for_cloud_init(conn, progress, timeouts.cloud_init)
        changes = sync_files(conn, files, progress, timeouts) if files else []
        changes += upload_secrets(
            conn, secrets, passwords, progress, timeouts, unknown, before_upload
        )
        if check_dns and settings.tls == "acme":
            wait_for_dns(settings, record, progress, timeouts.dns)
        if caddy_version:
            report_caddy_version(conn, caddy_version, progress)
        changes += start_caddy(conn, progress, timeouts.zot)
        wait_for_https(settings, record, conn, progress, timeouts.https)
    finally:
        conn.close()
    return ConvergeResult(changes=changes, registry_url=settings.registry_url)
