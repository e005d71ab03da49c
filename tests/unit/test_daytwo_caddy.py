"""upgrade-caddy against the fake server and a fake release server."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import tarfile
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from ops import layout
from ops.config import Settings, parse_settings
from ops.daytwo import caddy_upgrade
from ops.errors import ConfigError, VerificationError
from ops.remote.change import RolledBackError
from ops.remote.hosts import HostOutput

from .remote_fakes import FakeServer, fast_checks

BASE = "https://releases.example.test/download"
DOMAIN = "registry.example.com"


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_checks(monkeypatch)


def binary(version: str) -> bytes:
    return f"CADDY {version}\n".encode()


def tarball(content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("caddy")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
        readme = b"readme\n"
        info = tarfile.TarInfo("README.md")
        info.size = len(readme)
        archive.addfile(info, io.BytesIO(readme))
    return buffer.getvalue()


def release_assets(
    version: str, content: bytes | None = None, checksum: str | None = None
) -> dict[str, bytes]:
    data = tarball(content if content is not None else binary(version))
    digest = checksum or hashlib.sha512(data).hexdigest()
    name = f"caddy_{version}_linux_amd64.tar.gz"
    sums = f"{digest}  {name}\n{'0' * 128}  caddy_{version}_linux_arm64.tar.gz\n".encode()
    return {
        f"{BASE}/v{version}/{name}": data,
        f"{BASE}/v{version}/caddy_{version}_checksums.txt": sums,
    }


class CaddyHost:
    """Handlers that make the fake server behave like a host with Caddy installed."""

    def __init__(self, server: FakeServer, assets: dict[str, bytes]) -> None:
        self.server = server
        self.assets = assets
        # Versions whose Caddy does not serve HTTPS (a release that fails to serve).
        self.failing_versions: set[str] = set()
        server.on(r"^dpkg --print-architecture$", lambda argv, stdin: ("amd64\n", "", 0))
        server.on(r"^curl -fsSL ", self.download)
        server.on(r"^sha512sum -- ", self.sha512)
        server.on(r"^tar -xzf ", self.extract)
        server.on(r"^\S+ version$", self.version)
        server.on(r"^\S+ validate --config ", self.validate)
        server.on(r"^curl .* https://", self.https)

    def download(self, argv: list[str], stdin: str | None) -> tuple[str, str, int]:
        url = argv[-1]
        if url not in self.assets:
            return "", "curl: (22) The requested URL returned error: 404\n", 22
        target = argv[argv.index("-o") + 1]
        self.server.add_file(target, self.assets[url], 0o644)
        return "", "", 0

    def sha512(self, argv: list[str], stdin: str | None) -> tuple[str, str, int]:
        return f"{hashlib.sha512(self.server.files[argv[2]].data).hexdigest()}  {argv[2]}\n", "", 0

    def extract(self, argv: list[str], stdin: str | None) -> tuple[str, str, int]:
        archive, directory, member = argv[2], argv[4], argv[6]
        with tarfile.open(fileobj=io.BytesIO(self.server.files[archive].data)) as opened:
            data = opened.extractfile(member).read()
        self.server.add_file(f"{directory}/{member}", data, 0o755)
        return "", "", 0

    def _run_binary(self, path: str) -> str | None:
        file = self.server.files.get(path)
        match = re.fullmatch(rb"CADDY (\S+)\n", file.data) if file else None
        return match.group(1).decode() if match else None

    def version(self, argv: list[str], stdin: str | None) -> tuple[str, str, int]:
        version = self._run_binary(argv[0])
        if version is None:
            return "", "exec format error\n", 126
        return f"v{version} h1:fake\n", "", 0

    def validate(self, argv: list[str], stdin: str | None) -> tuple[str, str, int]:
        if self._run_binary(argv[0]) is None or argv[3] != layout.CADDYFILE:
            return "", "invalid\n", 1
        return "Valid configuration\n", "", 0

    def https(self, argv: list[str], stdin: str | None) -> tuple[str, str, int]:
        assert "--insecure" in argv
        assert f"{DOMAIN}:443:127.0.0.1" in argv
        running = self._run_binary(layout.CADDY_BINARY)
        serving = running is not None and running not in self.failing_versions
        return ("401" if serving else "000"), "", 0


@pytest.fixture
def settings(base_settings: dict) -> Settings:
    base_settings["caddy"] = {"version": "2.8.4", "download_base": BASE}
    return parse_settings(base_settings)


@pytest.fixture
def server() -> FakeServer:
    server = FakeServer()
    server.add_file(layout.CADDY_BINARY, binary("2.7.6"), 0o755)
    server.add_file(layout.CADDYFILE, "registry.example.com {\n}\n", 0o644)
    server.add_dir(layout.TOOLKIT_STATE_DIR)
    server.add_dir("/etc/zot-hetzner")
    server.add_unit(layout.CADDY_UNIT)
    return server


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def out(stream: io.StringIO) -> HostOutput:
    return HostOutput("server-1", False, stream, threading.Lock())


def upgrade(server: FakeServer, out: HostOutput, settings: Settings, **kwargs: object):
    kwargs.setdefault("version", "2.8.4")
    return caddy_upgrade.upgrade_caddy(server, out, settings=settings, **kwargs)


def test_upgrade_installs_verified_binary(
    server: FakeServer, out: HostOutput, settings: Settings
) -> None:
    CaddyHost(server, release_assets("2.8.4"))
    result = upgrade(server, out, settings)
    assert result.status == "changed"
    assert result.message == "caddy 2.7.6 -> 2.8.4"
    assert server.files[layout.CADDY_BINARY].data == binary("2.8.4")
    assert server.files[layout.CADDY_BINARY].mode == 0o755
    assert server.files[layout.CADDY_PREVIOUS_BINARY].data == binary("2.7.6")
    assert server.files[layout.CADDY_PREVIOUS_BINARY].mode == 0o755
    assert '"caddy_version": "2.8.4"' in server.text(layout.DEPLOYMENT_INFO)
    assert server.units[layout.CADDY_UNIT]["NRestarts"] == "1"
    assert not [path for path in server.files if "caddy-upgrade-" in path], (
        "work folder left behind"
    )
    assert layout.LOCK_DIR not in server.dirs
    install = [
        c
        for c in server.commands
        if c.startswith("install -m 0755") and "/usr/local/bin/.caddy." in c
    ]
    assert len(install) == 1


def test_same_version_is_no_change(server: FakeServer, out: HostOutput, settings: Settings) -> None:
    CaddyHost(server, release_assets("2.8.4"))
    upgrade(server, out, settings)
    calls = len(server.calls)
    result = upgrade(server, out, settings)
    assert result.status == "no change"
    assert not [
        c for c in server.commands[calls:] if c.startswith(("curl -fsSL", "mkdir", "install"))
    ]


def test_dry_run_downloads_nothing(
    server: FakeServer, out: HostOutput, settings: Settings, stream
) -> None:
    CaddyHost(server, release_assets("2.8.4"))
    result = upgrade(server, out, settings, dry_run=True)
    assert result.status == "would change"
    assert result.message == "caddy 2.7.6 -> 2.8.4"
    assert "caddy_2.8.4_linux_amd64.tar.gz" in stream.getvalue()
    assert server.files[layout.CADDY_BINARY].data == binary("2.7.6")
    assert not [
        c for c in server.commands if c.startswith(("curl -fsSL", "mkdir", "install", "mv"))
    ]


def test_wrong_checksum_changes_nothing(
    server: FakeServer, out: HostOutput, settings: Settings
) -> None:
    CaddyHost(server, release_assets("2.8.4", checksum="ab" * 64))
    with pytest.raises(VerificationError) as raised:
        upgrade(server, out, settings)
    message = str(raised.value)
    assert "SHA-512 of caddy_2.8.4_linux_amd64.tar.gz" in message
    assert "nothing was changed on server-1" in message
    assert server.files[layout.CADDY_BINARY].data == binary("2.7.6")
    assert server.units[layout.CADDY_UNIT]["NRestarts"] == "0"
    assert not [path for path in server.files if "caddy-upgrade-" in path]
    assert layout.LOCK_DIR not in server.dirs


def test_corrupt_download_changes_nothing(
    server: FakeServer, out: HostOutput, settings: Settings
) -> None:
    assets = release_assets("2.8.4")
    name = f"{BASE}/v2.8.4/caddy_2.8.4_linux_amd64.tar.gz"
    assets[name] = assets[name][:-10] + b"0123456789"
    CaddyHost(server, assets)
    with pytest.raises(VerificationError, match="corrupt or was tampered with"):
        upgrade(server, out, settings)
    assert server.files[layout.CADDY_BINARY].data == binary("2.7.6")


def test_missing_checksum_line(server: FakeServer, out: HostOutput, settings: Settings) -> None:
    assets = release_assets("2.8.4")
    assets[f"{BASE}/v2.8.4/caddy_2.8.4_checksums.txt"] = b"\n"
    CaddyHost(server, assets)
    with pytest.raises(VerificationError, match="lists no checksum"):
        upgrade(server, out, settings)


def test_broken_binary_changes_nothing(
    server: FakeServer, out: HostOutput, settings: Settings
) -> None:
    CaddyHost(server, release_assets("2.8.4", content=b"\x7fELF truncated"))
    with pytest.raises(VerificationError, match="did not run"):
        upgrade(server, out, settings)
    assert server.files[layout.CADDY_BINARY].data == binary("2.7.6")


def test_https_failure_rolls_back(server: FakeServer, out: HostOutput, settings: Settings) -> None:
    host = CaddyHost(server, release_assets("2.8.4"))
    host.failing_versions.add("2.8.4")
    with pytest.raises(RolledBackError) as raised:
        upgrade(server, out, settings)
    assert "Caddy responds at https://registry.example.com/v2/" in str(raised.value)
    assert "back at its previous state" in str(raised.value)
    assert server.files[layout.CADDY_BINARY].data == binary("2.7.6")
    assert server.files[layout.CADDY_BINARY].mode == 0o755
    assert server.units[layout.CADDY_UNIT]["NRestarts"] == "2"
    assert layout.LOCK_DIR not in server.dirs


def test_rollback_reports_checks_still_failing(
    server: FakeServer, out: HostOutput, settings: Settings
) -> None:
    host = CaddyHost(server, release_assets("2.8.4"))
    host.failing_versions.update({"2.7.6", "2.8.4"})
    with pytest.raises(RolledBackError, match="checks still fail after the rollback"):
        upgrade(server, out, settings)
    assert server.files[layout.CADDY_BINARY].data == binary("2.7.6")


def test_stopped_caddy_not_restarted(
    server: FakeServer, out: HostOutput, settings: Settings, stream
) -> None:
    CaddyHost(server, release_assets("2.8.4"))
    server.units[layout.CADDY_UNIT]["ActiveState"] = "inactive"
    upgrade(server, out, settings)
    assert server.units[layout.CADDY_UNIT]["NRestarts"] == "0"
    assert "takes effect when it starts" in stream.getvalue()


def test_latest_resolved_on_server(server: FakeServer, out: HostOutput, settings: Settings) -> None:
    CaddyHost(server, release_assets("2.8.4"))
    server.handlers.insert(
        0,
        (
            re.compile(r"^curl -fsSL --max-time 30 https://api"),
            lambda argv, stdin: ('{"tag_name": "v2.8.4"}', "", 0),
        ),
    )
    result = upgrade(server, out, settings, version="latest")
    assert result.message == "caddy 2.7.6 -> 2.8.4"


def test_version_option_validated(settings: Settings) -> None:
    assert caddy_upgrade.requested_version("v2.9.1", settings) == "2.9.1"
    assert caddy_upgrade.requested_version(None, settings) == "2.8.4"
    with pytest.raises(ConfigError, match="not a Caddy version"):
        caddy_upgrade.requested_version("2.9; reboot", settings)


class _ReleaseHandler(http.server.BaseHTTPRequestHandler):
    assets: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.assets.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def release_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ReleaseHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/download"
    server.shutdown()
    server.server_close()


def test_local_download_uploads_verified_assets(
    server: FakeServer, out: HostOutput, base_settings: dict, release_server: str
) -> None:
    base_settings["caddy"] = {"version": "2.8.4", "download_base": release_server}
    settings = parse_settings(base_settings)
    _ReleaseHandler.assets = {
        url.replace(BASE, "/download"): data for url, data in release_assets("2.8.4").items()
    }
    CaddyHost(server, {})
    result = upgrade(server, out, settings, local=caddy_upgrade.LocalDownloads())
    assert result.status == "changed"
    assert not [c for c in server.commands if c.startswith("curl -fsSL")]
    uploaded = sorted(
        upload.path.rsplit("/", 1)[1]
        for upload in server.uploads
        if "caddy-upgrade-" in upload.path
    )
    assert uploaded == ["caddy_2.8.4_checksums.txt", "caddy_2.8.4_linux_amd64.tar.gz"]
    assert server.files[layout.CADDY_BINARY].data == binary("2.8.4")


def test_local_download_rejects_bad_checksum_before_upload(
    server: FakeServer, out: HostOutput, base_settings: dict, release_server: str
) -> None:
    base_settings["caddy"] = {"version": "2.8.4", "download_base": release_server}
    settings = parse_settings(base_settings)
    assets = release_assets("2.8.4", checksum="cd" * 64)
    _ReleaseHandler.assets = {url.replace(BASE, "/download"): data for url, data in assets.items()}
    CaddyHost(server, {})
    with pytest.raises(VerificationError, match="downloaded here"):
        upgrade(server, out, settings, local=caddy_upgrade.LocalDownloads())
    assert [u for u in server.uploads if u.path.endswith(".tar.gz")] == []
    assert server.files[layout.CADDY_BINARY].data == binary("2.7.6")


def test_release_urls() -> None:
    release = caddy_upgrade.Release("2.8.4", "arm64", BASE + "/")
    assert release.tarball_url == f"{BASE}/v2.8.4/caddy_2.8.4_linux_arm64.tar.gz"
    assert release.checksums_url == f"{BASE}/v2.8.4/caddy_2.8.4_checksums.txt"
