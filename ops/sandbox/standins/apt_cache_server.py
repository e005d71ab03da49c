"""A caching HTTP proxy for Debian mirrors: the process behind AptProxy.

Run as `python -m ops.sandbox.standins.apt_cache_server --port N --cache-dir DIR
--allow http://deb.debian.org/debian ...`. apt sends absolute URLs to a proxy
(`GET http://host/path`); this server forwards only URLs below an --allow
prefix and rejects everything else with 403. It carries no CONNECT, so https
sources do not go through it.

Caching: files under pool/ and by-hash/ never change once published (Debian
archive layout), so a cached copy is served without asking the mirror. Other
files (InRelease, Release, indexes fetched by name) are fetched from the
mirror each time; the cached copy is served only when the mirror cannot be
reached, so apt on a sandbox host keeps working offline with what an earlier
run fetched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import posixpath
import shutil
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

LOG = logging.getLogger("apt_cache_server")
CHUNK_SIZE = 256 * 1024
# Headers copied from the mirror's response into ours and into the cache metadata.
KEPT_HEADERS = ("Content-Type", "Last-Modified", "ETag")


def is_immutable(path: str) -> bool:
    """Tell whether a mirror path names content that never changes once published."""
    segments = path.split("/")
    return "pool" in segments or "by-hash" in segments


def normalized_path(path: str) -> str | None:
    """Return `path` if it is absolute and free of `.`/`..` segments and empty segments, else None."""
    if not path.startswith("/") or "\\" in path:
        return None
    if posixpath.normpath(path) != path or "//" in path:
        return None
    return path


def allowed(url: str, prefixes: list[str]) -> bool:
    """Tell whether `url` lies below one of `prefixes` (whole path segments only)."""
    return any(url.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect could lead outside the allowed mirrors, so it is not followed.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class CacheProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, cache_dir: Path, prefixes: list[str], timeout: float) -> None:
        super().__init__(("127.0.0.1", port), CacheProxyHandler)
        self.cache_dir = cache_dir
        self.prefixes = prefixes
        self.upstream_timeout = timeout
        # Mirrors are reached directly: a proxy from the environment is not a mirror.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self.counts_lock = threading.Lock()
        self.counts = {"hit": 0, "miss": 0, "refresh": 0, "stale": 0, "rejected": 0}

    def count(self, outcome: str) -> None:
        with self.counts_lock:
            self.counts[outcome] += 1


class CacheProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CacheProxyServer
    client_open = True

    def log_message(self, format, *args):
        LOG.info("%s %s", self.address_string(), format % args)

    def do_CONNECT(self):
        self.server.count("rejected")
        self.send_error(405, "CONNECT is not supported: use http:// mirror URLs")

    def do_HEAD(self):
        self.handle_request(send_body=False)

    def do_GET(self):
        self.handle_request(send_body=True)

    # --- request handling ---------------------------------------------------------------

    def handle_request(self, send_body: bool) -> None:
        url = self.path
        if url == "/_standin/stats":
            self.send_stats()
            return
        parts = urlsplit(url)
        path = normalized_path(parts.path)
        if parts.scheme != "http" or not parts.netloc or path is None or parts.query:
            self.server.count("rejected")
            self.send_error(400, "expected an absolute http:// URL without a query")
            return
        if not allowed(url, self.server.prefixes):
            self.server.count("rejected")
            LOG.warning("rejected %s: not below an allowed mirror prefix", url)
            self.send_error(403, "not a mirror named in this machine's apt sources")
            return
        cached = self.server.cache_dir / parts.netloc / path.lstrip("/")
        if is_immutable(path) and cached.is_file():
            self.server.count("hit")
            self.send_cached(cached, send_body, "HIT")
            return
        self.fetch(url, cached, send_body, refresh=cached.is_file())

    def fetch(self, url: str, cached: Path, send_body: bool, refresh: bool) -> None:
        # handle_request let only http:// URLs below an allowed prefix through.
        request = urllib.request.Request(  # noqa: S310
            url, headers={"User-Agent": "zot-hetzner-apt-proxy"}
        )
        try:
            response = self.server.opener.open(request, timeout=self.server.upstream_timeout)
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                location = exc.headers.get("Location", "")
                LOG.error("mirror redirected %s to %s; redirects are not followed", url, location)
                self.send_error(502, f"mirror redirected to {location}; redirects are not followed")
                return
            if exc.code >= 500 and cached.is_file():
                LOG.warning("mirror returned %d for %s; serving the cached copy", exc.code, url)
                self.server.count("stale")
                self.send_cached(cached, send_body, "STALE")
                return
            LOG.info("mirror returned %d for %s", exc.code, url)
            self.send_error(exc.code, f"mirror returned {exc.code}")
            return
        except (urllib.error.URLError, OSError) as exc:
            if cached.is_file():
                LOG.warning("mirror unreachable for %s (%s); serving the cached copy", url, exc)
                self.server.count("stale")
                self.send_cached(cached, send_body, "STALE")
                return
            LOG.error("mirror unreachable for %s and nothing cached: %s", url, exc)
            self.send_error(502, f"mirror unreachable: {exc}")
            return
        outcome = "refresh" if refresh else "miss"
        self.server.count(outcome)
        with response:
            self.relay(response, cached, send_body, outcome.upper())

    def relay(self, response, cached: Path, send_body: bool, outcome: str) -> None:
        """Send the mirror's response to the client while writing it to the cache."""
        length = response.headers.get("Content-Length")
        self.send_response(response.status)
        for name in KEPT_HEADERS:
            if response.headers.get(name):
                self.send_header(name, response.headers[name])
        if length is not None:
            self.send_header("Content-Length", length)
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("X-Cache", outcome)
        self.end_headers()
        cached.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary_name = tempfile.mkstemp(dir=cached.parent, prefix=".partial-")
        temporary = Path(temporary_name)
        received = 0
        # The last chunk goes to the client only after the cache entry is in
        # place, so a client that has the whole file finds it cached next time.
        held_back = b""
        try:
            with os.fdopen(handle, "wb") as partial:
                while chunk := response.read(CHUNK_SIZE):
                    partial.write(chunk)
                    received += len(chunk)
                    self.send_chunk(held_back, send_body)
                    held_back = chunk
            if length is not None and received != int(length):
                LOG.error("short read from mirror: %d of %s bytes", received, length)
                self.close_connection = True
                return
            metadata = {
                name: response.headers[name] for name in KEPT_HEADERS if response.headers.get(name)
            }
            self.metadata_path(cached).write_text(json.dumps(metadata))
            temporary.replace(cached)
            self.send_chunk(held_back, send_body)
        finally:
            temporary.unlink(missing_ok=True)

    def send_chunk(self, chunk: bytes, send_body: bool) -> None:
        if not (chunk and send_body and self.client_open):
            return
        try:
            self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            # The download goes on without the client, so the next request is a hit.
            self.client_open = False
            self.close_connection = True

    def send_cached(self, cached: Path, send_body: bool, outcome: str) -> None:
        try:
            metadata = json.loads(self.metadata_path(cached).read_text())
        except (FileNotFoundError, ValueError):
            metadata = {}
        size = cached.stat().st_size
        self.send_response(200)
        for name, value in metadata.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(size))
        self.send_header("X-Cache", outcome)
        self.end_headers()
        if send_body:
            with (
                cached.open("rb") as source,
                contextlib.suppress(BrokenPipeError, ConnectionResetError),
            ):
                shutil.copyfileobj(source, self.wfile, CHUNK_SIZE)

    @staticmethod
    def metadata_path(cached: Path) -> Path:
        return cached.with_name(f".{cached.name}.headers.json")

    def send_stats(self) -> None:
        with self.server.counts_lock:
            body = (json.dumps(self.server.counts) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--cache-dir", type=Path, required=True, help="directory of cached files")
    parser.add_argument(
        "--allow",
        action="append",
        required=True,
        help="mirror URL prefix to forward to, e.g. http://deb.debian.org/debian (repeatable)",
    )
    parser.add_argument(
        "--upstream-timeout", type=float, default=30.0, help="seconds to wait for the mirror"
    )
    options = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    options.cache_dir.mkdir(parents=True, exist_ok=True)
    server = CacheProxyServer(
        options.port, options.cache_dir, options.allow, options.upstream_timeout
    )
    with server:
        LOG.info(
            "apt proxy on 127.0.0.1:%d, cache %s, mirrors %s",
            options.port,
            options.cache_dir,
            ", ".join(options.allow),
        )
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
