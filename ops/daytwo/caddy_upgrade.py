"""upgrade-caddy: replace the Caddy binary with a verified release, or roll back.

The release tarball for the server's architecture (`dpkg --print-architecture`)
and the release's checksum file are downloaded on the server (or here, with
local_download, and uploaded). The tarball's SHA-512 must match the checksum
file, the new binary must report the expected version and accept the current
Caddyfile, all before anything is replaced. The running binary is kept at
layout.CADDY_PREVIOUS_BINARY; the new one is installed with mode 0755 and
renamed into place, Caddy restarts and HTTPS must respond, or the previous
binary is restored and Caddy restarts on it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from .. import caddy, layout, validate
from ..config import Settings
from ..errors import ConfigError, OpsError, VerificationError
from ..remote import checks, commands, facts
from ..remote.change import DesiredFile, Step, apply_change, restart_step
from ..remote.execute import host_of, output, run, upload
from ..remote.hosts import CHANGED, UNCHANGED, WOULD_CHANGE, HostOutput, Outcome
from ..render import deployment_info
from . import common

TASK = "upgrade-caddy"
# Seconds for one download of a release asset (the tarball is about 15 MB).
DOWNLOAD_TIMEOUT = 300


@dataclass(frozen=True)
class Release:
    """The asset names and URLs of one Caddy release for one architecture."""

    version: str
    arch: str
    base: str

    @property
    def tarball(self) -> str:
        return f"caddy_{self.version}_linux_{self.arch}.tar.gz"

    @property
    def checksums(self) -> str:
        return f"caddy_{self.version}_checksums.txt"

    @property
    def tarball_url(self) -> str:
        return f"{self.base.rstrip('/')}/v{self.version}/{self.tarball}"

    @property
    def checksums_url(self) -> str:
        return f"{self.base.rstrip('/')}/v{self.version}/{self.checksums}"


def requested_version(value: str | None, settings: Settings) -> str:
    """Return the --version value (or deployment.caddy.version), normalised."""
    text = value if value is not None else settings.caddy.version
    try:
        return validate.caddy_version(text)
    except ValueError as error:
        raise ConfigError(f"--version {text!r} {error}") from None


def resolve_locally(settings: Settings, version: str) -> str:
    """Resolve "latest" through the releases API from this machine."""
    if version != "latest":
        return version
    latest = settings.caddy.model_copy(update={"version": "latest"})
    return caddy.resolve_version(settings.model_copy(update={"caddy": latest}))


def resolve_on_server(conn: Any, settings: Settings, version: str) -> str:
    """Resolve "latest" through the releases API from the server."""
    if version != "latest":
        return version
    url = settings.caddy.releases_api
    text = output(conn, commands.fetch_text(url))
    try:
        tag = json.loads(text)["tag_name"]
        return validate.caddy_version(str(tag))
    except (ValueError, KeyError, TypeError):
        raise OpsError(
            f"{url} returned no usable tag_name on {host_of(conn)}; pass --version 2.x.y"
        ) from None


def _fetch(url: str) -> bytes:
    # The settings model admits only http and https URLs for the download base.
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:  # noqa: S310
            return response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise OpsError(f"download of {url} failed: {error}") from None


class LocalDownloads:
    """Release assets downloaded on this machine once and verified, shared by all servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assets: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    def get(self, release: Release) -> tuple[bytes, bytes]:
        key = (release.version, release.arch)
        with self._lock:
            if key not in self._assets:
                tarball = _fetch(release.tarball_url)
                checksums = _fetch(release.checksums_url)
                verify_sha512(
                    release,
                    hashlib.sha512(tarball).hexdigest(),
                    checksums.decode("utf-8", "replace"),
                    "here",
                )
                self._assets[key] = (tarball, checksums)
            return self._assets[key]


def verify_sha512(release: Release, actual: str, checksums_text: str, where: str) -> None:
    expected = facts.parse_checksum_line(checksums_text, release.tarball)
    if expected is None:
        raise VerificationError(
            f"{release.checksums} lists no checksum for {release.tarball} (downloaded {where}); "
            "the release may not support this architecture"
        )
    if actual.lower() != expected:
        raise VerificationError(
            f"SHA-512 of {release.tarball} downloaded {where} is {actual[:16]}..., but "
            f"{release.checksums} lists {expected[:16]}...: the download is corrupt or was "
            "tampered with"
        )


def _fetch_assets(
    conn: Any, release: Release, workdir: str, local: LocalDownloads | None, out: HostOutput
) -> None:
    tarball = f"{workdir}/{release.tarball}"
    checksums = f"{workdir}/{release.checksums}"
    if local is not None:
        out(f"upload {release.tarball} (downloaded here)")
        tarball_data, checksums_data = local.get(release)
        upload(conn, tarball, tarball_data, 0o600)
        upload(conn, checksums, checksums_data, 0o600)
    else:
        out(f"download {release.tarball_url}")
        run(
            conn,
            commands.download(release.tarball_url, tarball, max_seconds=DOWNLOAD_TIMEOUT),
            timeout=DOWNLOAD_TIMEOUT + 30,
        )
        run(conn, commands.download(release.checksums_url, checksums, max_seconds=60), timeout=90)
    actual = output(conn, commands.sha512(tarball)).split()[0]
    verify_sha512(release, actual, facts.read_file(conn, checksums), f"on {host_of(conn)}")
    out(f"SHA-512 of {release.tarball} matches {release.checksums}")


def _check_new_binary(conn: Any, binary: str, version: str, out: HostOutput) -> None:
    reported = facts.program_version(conn, binary)
    if reported != version:
        raise VerificationError(
            f"the downloaded caddy reports version {reported or '(it did not run)'}, "
            f"expected {version}"
        )
    run(conn, commands.caddy_validate(binary, layout.CADDYFILE))
    out(f"caddy {version} runs and accepts {layout.CADDYFILE}")


def _prepare(
    conn: Any, release: Release, workdir: str, local: LocalDownloads | None, out: HostOutput
) -> tuple[str, str]:
    """Download, verify and test the new binary in WORKDIR; return its path and SHA-256."""
    try:
        _fetch_assets(conn, release, workdir, local, out)
        run(conn, commands.extract_member(f"{workdir}/{release.tarball}", workdir, "caddy"))
        new_binary = f"{workdir}/caddy"
        _check_new_binary(conn, new_binary, release.version, out)
        digest = facts.file_state(conn, new_binary).sha256
    except OpsError as error:
        raise type(error)(f"{error}\nnothing was changed on {host_of(conn)}") from None
    assert digest is not None
    return new_binary, digest


def _installed_version_step(version: str) -> Step:
    def check(conn: Any) -> None:
        reported = facts.program_version(conn, layout.CADDY_BINARY)
        if reported != version:
            raise VerificationError(f"{layout.CADDY_BINARY} reports {reported}, expected {version}")

    return Step(
        f"{layout.CADDY_BINARY} reports {version}", action=check, rerun_after_rollback=False
    )


def https_check(domain: str, timeout: float | None = None) -> Step:
    """Build the check that Caddy serves HTTPS for DOMAIN on this server (zot's 200 or 401).

    --insecure because this checks that Caddy serves the site, not the chain:
    with `tls internal` the root is Caddy's own CA, unknown to curl.
    """
    url = f"https://{domain}/v2/"
    timeout = common.CADDY_TIMEOUT if timeout is None else timeout

    def check(conn: Any) -> None:
        checks.wait_unit_active(conn, layout.CADDY_UNIT, timeout=timeout)
        checks.wait_http(
            conn, url, {200, 401}, timeout=timeout, insecure=True, resolve=f"{domain}:443:127.0.0.1"
        )

    return Step(f"Caddy responds at {url}", action=check)


def upgrade_caddy(
    conn: Any,
    out: HostOutput,
    *,
    settings: Settings,
    version: str,
    local: LocalDownloads | None = None,
    dry_run: bool = False,
    break_lock: bool = False,
) -> Outcome:
    """Upgrade (or downgrade) Caddy on one server to VERSION ("latest" or 2.x.y)."""
    arch = facts.architecture(conn)
    current = facts.program_version(conn, layout.CADDY_BINARY)
    target = resolve_on_server(conn, settings, version)
    release = Release(target, arch, settings.caddy.download_base)
    if current == target:
        out(f"caddy {current} is installed; nothing to do")
        return Outcome(UNCHANGED, f"caddy {current}")
    if dry_run:
        out(
            f"would upgrade caddy {current or '(missing)'} -> {target} ({arch}) from {release.tarball_url}"
        )
        return Outcome(WOULD_CHANGE, f"caddy {current or '(missing)'} -> {target}")

    running = facts.unit_state(conn, layout.CADDY_UNIT).is_active
    with common.maybe_locked(conn, TASK, dry_run=False, break_lock=break_lock, out=out):
        workdir = f"{layout.TOOLKIT_STATE_DIR}/caddy-upgrade-{secrets.token_hex(6)}"
        run(conn, commands.make_directory(workdir, 0o700))
        try:
            new_binary, digest = _prepare(conn, release, workdir, local, out)
            if current is not None:
                run(
                    conn,
                    commands.install_file(layout.CADDY_BINARY, layout.CADDY_PREVIOUS_BINARY, 0o755),
                )
                out(f"kept caddy {current} at {layout.CADDY_PREVIOUS_BINARY}")
            files = [
                DesiredFile(layout.CADDY_BINARY, None, 0o755, source=new_binary, digest=digest),
                DesiredFile(layout.DEPLOYMENT_INFO, deployment_info(settings, target), 0o644),
            ]
            steps, after = [], [_installed_version_step(target)]
            if running:
                steps.append(restart_step(layout.CADDY_UNIT))
                after.append(https_check(settings.domain))
            else:
                out(
                    f"{layout.CADDY_UNIT} is not running; the new binary takes effect when it starts"
                )
            apply_change(conn, task=TASK, files=files, steps=steps, checks=after, out=out)
        finally:
            try:
                run(conn, commands.remove_tree(workdir))
            except OpsError as error:
                out(f"could not remove {workdir}: {error}")
    return Outcome(CHANGED, f"caddy {current or '(missing)'} -> {target}")
