"""The caching apt proxy against a fake Debian mirror on loopback."""

from __future__ import annotations

import functools
import http.client
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ops.sandbox.standins.apt_cache_server import allowed, is_immutable, normalized_path
from ops.sandbox.standins.apt_proxy import AptProxy
from ops.sandbox.standins.process import StandinError

POOL_FILE = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb"
INDEX_FILE = "/debian/dists/bookworm/InRelease"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class FakeMirror:
    """A directory served over HTTP on loopback, counting the requests it receives."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        mirror = self

        class CountingHandler(QuietHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                super().do_GET()

        handler = functools.partial(CountingHandler, directory=str(root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write(self, path: str, content: bytes) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[FakeMirror]:
    fake = FakeMirror(tmp_path / "mirror")
    fake.write(POOL_FILE, b"deb package bytes")
    fake.write(INDEX_FILE, b"Origin: Debian\nSuite: stable\n")
    yield fake
    fake.shutdown()


@pytest.fixture
def proxy(tmp_path: Path, mirror: FakeMirror) -> Iterator[AptProxy]:
    with AptProxy(
        tmp_path / "work",
        cache_dir=tmp_path / "cache",
        mirrors=[f"{mirror.url}/debian"],
        upstream_timeout=5,
    ) as server:
        yield server


def request(proxy: AptProxy, url: str, method: str = "GET") -> tuple[int, dict, bytes]:
    """Send `method url` to the proxy in absolute form, as apt does."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        connection.request(method, url)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_path_classification():
    assert is_immutable(POOL_FILE)
    assert is_immutable("/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/ab12")
    assert not is_immutable(INDEX_FILE)
    assert not is_immutable("/debian/dists/bookworm/main/binary-amd64/Packages.xz")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/debian/dists/bookworm/InRelease", "/debian/dists/bookworm/InRelease"),
        ("/debian/../etc/passwd", None),
        ("/debian/./pool", None),
        ("/debian//pool", None),
        ("relative/path", None),
    ],
)
def test_normalized_path(path: str, expected: str | None):
    assert normalized_path(path) == expected


def test_allowed_matches_whole_segments():
    prefixes = ["http://deb.debian.org/debian"]

    assert allowed("http://deb.debian.org/debian/dists/bookworm/InRelease", prefixes)
    assert not allowed("http://deb.debian.org/debian-security/dists/x", prefixes)
    assert not allowed("http://deb.debian.org.evil.example/debian/x", prefixes)


def test_pool_file_cached_after_first_fetch(proxy: AptProxy, mirror: FakeMirror):
    url = mirror.url + POOL_FILE

    first = request(proxy, url)
    second = request(proxy, url)

    assert first[0] == 200
    assert first[2] == b"deb package bytes"
    assert first[1]["X-Cache"] == "MISS"
    assert second[0] == 200
    assert second[2] == b"deb package bytes"
    assert second[1]["X-Cache"] == "HIT"
    assert mirror.requests.count(POOL_FILE) == 1
    assert proxy.stats()["hit"] == 1


def test_index_file_refreshed_each_time(proxy: AptProxy, mirror: FakeMirror):
    url = mirror.url + INDEX_FILE
    request(proxy, url)
    mirror.write(INDEX_FILE, b"Origin: Debian\nSuite: stable\nDate: newer\n")

    status, headers, body = request(proxy, url)

    assert status == 200
    assert headers["X-Cache"] == "REFRESH"
    assert body.endswith(b"Date: newer\n")
    assert mirror.requests.count(INDEX_FILE) == 2


def test_cached_copy_served_when_mirror_down(proxy: AptProxy, mirror: FakeMirror):
    request(proxy, mirror.url + INDEX_FILE)
    request(proxy, mirror.url + POOL_FILE)
    mirror.shutdown()

    index = request(proxy, mirror.url + INDEX_FILE)
    pool = request(proxy, mirror.url + POOL_FILE)
    missing = request(proxy, mirror.url + "/debian/dists/trixie/InRelease")

    assert index[0] == 200
    assert index[1]["X-Cache"] == "STALE"
    assert index[2] == b"Origin: Debian\nSuite: stable\n"
    assert pool[1]["X-Cache"] == "HIT"
    assert missing[0] == 502
    assert proxy.stats()["stale"] == 1


def test_mirror_404_passed_on_and_not_cached(proxy: AptProxy, mirror: FakeMirror, tmp_path):
    status, _, _ = request(proxy, mirror.url + "/debian/pool/main/n/none/none_1_amd64.deb")

    assert status == 404
    assert not list((tmp_path / "cache").rglob("none_1_amd64.deb"))


def test_head_sends_headers_only(proxy: AptProxy, mirror: FakeMirror):
    request(proxy, mirror.url + POOL_FILE)

    status, headers, body = request(proxy, mirror.url + POOL_FILE, method="HEAD")

    assert status == 200
    assert headers["Content-Length"] == str(len(b"deb package bytes"))
    assert body == b""


@pytest.mark.parametrize(
    ("url", "method", "expected"),
    [
        ("http://other.example/debian/dists/bookworm/InRelease", "GET", 403),
        ("/debian/dists/bookworm/InRelease", "GET", 400),
        ("MIRROR/debian/../../etc/passwd", "GET", 400),
        ("MIRROR/debian/dists/bookworm/InRelease?x=1", "GET", 400),
        ("MIRROR/debian-other/dists/bookworm/InRelease", "GET", 403),
        ("MIRROR/debian/dists/bookworm/InRelease", "POST", 501),
    ],
)
def test_rejected_requests(proxy: AptProxy, mirror: FakeMirror, url: str, method: str, expected):
    status, _, _ = request(proxy, url.replace("MIRROR", mirror.url), method=method)

    assert status == expected
    assert mirror.requests == []


def test_connect_rejected(proxy: AptProxy):
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        connection.request("CONNECT", "deb.debian.org:443")
        status = connection.getresponse().status
    finally:
        connection.close()

    assert status == 405


def test_settings_override(proxy: AptProxy):
    assert proxy.settings_overrides() == {"bootstrap.apt_proxy": proxy.url}
    assert proxy.settings_overrides(guest_port=3142) == {
        "bootstrap.apt_proxy": "http://127.0.0.1:3142"
    }


def test_no_mirror_rejected(tmp_path: Path):
    with pytest.raises(StandinError, match="no http:// Debian mirror"):
        AptProxy(tmp_path, mirrors=[])
