"""The Caddy release stand-in: asset format, version rewrite and fault modes.

A synthetic ELF executable with a Go string variable replaces Debian's caddy
here; tests/integration/test_standins.py runs the real one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

from ops.sandbox.standins.caddy_releases import (
    CaddyFault,
    CaddyReleaseServer,
    build_tarball,
    checksum_line,
    elf_machine,
    next_patch_version,
    rewrite_version,
    version_output,
)
from ops.sandbox.standins.process import StandinError

from .test_standins_go_string import go_executable, read_go_string


def fetch(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.read()


def members(tarball: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        return {member.name: archive.extractfile(member).read() for member in archive}


def sums(text: str) -> dict[str, str]:
    return {name: digest for digest, name in (line.split("  ") for line in text.splitlines())}


@pytest.fixture
def server(tmp_path: Path):
    amd64 = tmp_path / "caddy-amd64"
    amd64.write_bytes(go_executable(0x3E, padding=200_000))
    arm64 = tmp_path / "caddy-arm64"
    arm64.write_bytes(go_executable(0xB7, padding=200_000))
    releases = CaddyReleaseServer(
        tmp_path / "work",
        amd64_binary=amd64,
        arm64_binary=arm64,
        source_version="2.6.2",
        cache_dir=tmp_path / "cache",
    )
    with releases:
        yield releases


def test_rewrite_version_prints_upstream_form():
    patched = rewrite_version(go_executable(), "2.6.2", "2.6.3")

    assert read_go_string(patched) == "v2.6.3 h1:stand-in-from-debian-caddy-2.6.2"
    assert version_output("2.6.3", "2.6.2").split()[0] == "v2.6.3"


def test_rewrite_version_names_versions_on_failure():
    with pytest.raises(StandinError, match=r"cannot make caddy 2\.6\.3 from Debian's 2\.6\.1"):
        rewrite_version(go_executable(), "2.6.1", "2.6.3")


def test_next_patch_version():
    assert next_patch_version("2.6.2") == "2.6.3"
    assert next_patch_version("2.10.9") == "2.10.10"
    with pytest.raises(StandinError):
        next_patch_version("2.6.x")


def test_elf_machine_reads_header():
    assert elf_machine(go_executable(0xB7)) == 0xB7
    with pytest.raises(StandinError, match="not an ELF"):
        elf_machine(b"#!/bin/sh\n")


def test_tarball_is_deterministic_upstream_layout():
    first = build_tarball(b"binary", b"license", b"readme")
    second = build_tarball(b"binary", b"license", b"readme")

    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as archive:
        infos = {info.name: info for info in archive}
    assert sorted(infos) == ["LICENSE", "README.md", "caddy"]
    assert infos["caddy"].mode == 0o755
    assert infos["caddy"].isfile()


def test_checksum_line_matches_sha512sum_format():
    line = checksum_line(b"abc", "caddy_2.6.2_linux_amd64.tar.gz")

    assert line == f"{hashlib.sha512(b'abc').hexdigest()}  caddy_2.6.2_linux_amd64.tar.gz\n"


def test_server_serves_both_versions_and_architectures(server: CaddyReleaseServer):
    for version in ("2.6.2", "2.6.3"):
        checksums = sums(fetch(server.checksums_url(version)).decode())
        assert sorted(checksums) == [
            f"caddy_{version}_linux_amd64.tar.gz",
            f"caddy_{version}_linux_arm64.tar.gz",
        ]
        for arch, machine in (("amd64", 0x3E), ("arm64", 0xB7)):
            tarball = fetch(server.tarball_url(version, arch))
            assert (
                hashlib.sha512(tarball).hexdigest()
                == checksums[f"caddy_{version}_linux_{arch}.tar.gz"]
            )
            binary = members(tarball)["caddy"]
            assert elf_machine(binary) == machine
            assert read_go_string(binary) == version_output(version, "2.6.2")


def test_releases_api_names_latest(server: CaddyReleaseServer):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(server.releases_api(), timeout=10) as response:
        content_type = response.headers["Content-Type"]
        release = json.loads(response.read())

    assert content_type == "application/json"
    assert release["tag_name"] == "v2.6.3"

    server.set_latest("2.6.2")

    assert json.loads(fetch(server.releases_api()))["tag_name"] == "v2.6.2"
    with pytest.raises(StandinError, match="not served"):
        server.set_latest("9.9.9")


def test_settings_overrides_use_guest_port(server: CaddyReleaseServer):
    overrides = server.settings_overrides(guest_port=8443)

    assert overrides == {
        "caddy.download_base": "http://127.0.0.1:8443/caddyserver/caddy/releases/download",
        "caddy.releases_api": "http://127.0.0.1:8443/repos/caddyserver/caddy/releases/latest",
    }


def test_unknown_asset_is_404(server: CaddyReleaseServer):
    with pytest.raises(urllib.error.HTTPError) as raised:
        fetch(server.tarball_url("2.6.4", "amd64"))

    assert raised.value.code == 404


def test_fault_corrupt_tarball(server: CaddyReleaseServer):
    server.inject_fault(CaddyFault.CORRUPT_TARBALL, "2.6.3")

    tarball = fetch(server.tarball_url("2.6.3", "amd64"))
    listed = sums(fetch(server.checksums_url("2.6.3")).decode())["caddy_2.6.3_linux_amd64.tar.gz"]

    assert hashlib.sha512(tarball).hexdigest() != listed
    with pytest.raises((OSError, EOFError, zlib.error)):
        gzip.decompress(tarball)


def test_fault_wrong_checksum(server: CaddyReleaseServer):
    server.inject_fault(CaddyFault.WRONG_CHECKSUM, "2.6.3")

    tarball = fetch(server.tarball_url("2.6.3", "amd64"))
    listed = sums(fetch(server.checksums_url("2.6.3")).decode())

    assert hashlib.sha512(tarball).hexdigest() != listed["caddy_2.6.3_linux_amd64.tar.gz"]
    arm64 = fetch(server.tarball_url("2.6.3", "arm64"))
    assert hashlib.sha512(arm64).hexdigest() == listed["caddy_2.6.3_linux_arm64.tar.gz"]


def test_fault_missing_checksum(server: CaddyReleaseServer):
    server.inject_fault(CaddyFault.MISSING_CHECKSUM, "2.6.3")

    listed = sums(fetch(server.checksums_url("2.6.3")).decode())

    assert list(listed) == ["caddy_2.6.3_linux_arm64.tar.gz"]


def test_fault_broken_binary_keeps_checksum_valid(server: CaddyReleaseServer):
    server.inject_fault(CaddyFault.BROKEN_BINARY, "2.6.3")

    tarball = fetch(server.tarball_url("2.6.3", "amd64"))
    listed = sums(fetch(server.checksums_url("2.6.3")).decode())

    assert hashlib.sha512(tarball).hexdigest() == listed["caddy_2.6.3_linux_amd64.tar.gz"]
    assert len(members(tarball)["caddy"]) == 64 * 1024


def test_reset_restores_pristine_assets(server: CaddyReleaseServer):
    before = fetch(server.tarball_url("2.6.3", "amd64"))
    server.inject_fault(CaddyFault.CORRUPT_TARBALL, "2.6.3")
    server.inject_fault(CaddyFault.MISSING_CHECKSUM, "2.6.3")

    server.reset()

    assert fetch(server.tarball_url("2.6.3", "amd64")) == before
    listed = sums(fetch(server.checksums_url("2.6.3")).decode())
    assert hashlib.sha512(before).hexdigest() == listed["caddy_2.6.3_linux_amd64.tar.gz"]


def test_assets_are_cached_between_servers(tmp_path: Path, server: CaddyReleaseServer):
    cached = sorted(path.name for path in (tmp_path / "cache").iterdir())
    pristine = server.pristine_dir

    again = CaddyReleaseServer(
        tmp_path / "work2",
        amd64_binary=server.amd64_binary,
        arm64_binary=server.arm64_binary,
        source_version="2.6.2",
        cache_dir=tmp_path / "cache",
    )
    again.build()

    assert again.pristine_dir == pristine
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == cached


def test_wrong_architecture_binary_rejected(tmp_path: Path):
    arm = tmp_path / "caddy"
    arm.write_bytes(go_executable(0xB7))
    releases = CaddyReleaseServer(
        tmp_path / "work",
        amd64_binary=arm,
        architectures=("amd64",),
        source_version="2.6.2",
        cache_dir=tmp_path / "cache",
    )

    with pytest.raises(StandinError, match="is not an amd64 binary"):
        releases.build()
