"""An apt proxy on 127.0.0.1 for sandbox hosts, with a cache that persists across runs.

apt-cacher-ng 3.7.4 (Debian 12) cannot serve here: with `BindAddress: 127.0.0.1`
its resolver waited until the process was stopped and then printed "Error
resolving address for binding", and without BindAddress it listens on every
interface. This proxy is a small standard-library server instead (see
apt_cache_server), started as our own process.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from .debian import host_apt_sources, mirror_prefixes
from .process import LOOPBACK, StandinError, StandinProcess, http_status, python_environment

DEFAULT_CACHE_DIR = Path("/var/cache/zot-hetzner-sandbox/apt")


class AptProxy(StandinProcess):
    """A caching proxy that forwards only to the Debian mirrors this machine's apt uses.

    `mirrors` defaults to the http:// URIs in /etc/apt/sources.list and
    /etc/apt/sources.list.d. `cache_dir` is kept across runs on purpose.
    """

    name = "apt-proxy"

    def __init__(
        self,
        work_dir: Path,
        port: int | None = None,
        *,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        mirrors: list[str] | None = None,
        upstream_timeout: float = 30.0,
    ) -> None:
        super().__init__(work_dir, port)
        self.cache_dir = Path(cache_dir)
        self.mirrors = mirrors if mirrors is not None else mirror_prefixes(host_apt_sources())
        if not self.mirrors:
            raise StandinError(
                "no http:// Debian mirror found in this machine's apt sources; "
                "pass mirrors=['http://deb.debian.org/debian']"
            )
        self.upstream_timeout = upstream_timeout

    def proxy_url(self, guest_port: int | None = None) -> str:
        return f"http://{LOOPBACK}:{guest_port or self.require_port()}"

    def settings_overrides(self, guest_port: int | None = None) -> dict[str, object]:
        """Return the settings field that makes a sandbox host's apt use this proxy."""
        return {"bootstrap.apt_proxy": self.proxy_url(guest_port)}

    def stats(self) -> dict[str, int]:
        """Return the proxy's request counts: hit, miss, refresh, stale, rejected."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/_standin/stats", timeout=5) as response:
            return json.loads(response.read())

    def command(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "ops.sandbox.standins.apt_cache_server",
            "--port",
            str(self.require_port()),
            "--cache-dir",
            str(self.cache_dir),
            "--upstream-timeout",
            str(self.upstream_timeout),
        ]
        for mirror in self.mirrors:
            argv += ["--allow", mirror]
        return argv

    def environment(self) -> dict[str, str]:
        return python_environment()

    def probe(self) -> bool:
        return http_status(f"{self.url}/_standin/stats") == 200
