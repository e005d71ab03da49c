"""A loopback stand-in for Caddy's GitHub releases: tarballs, checksums and the releases API.

Assets follow upstream's names and formats: `{base}/v{ver}/caddy_{ver}_linux_{arch}.tar.gz`
(members `caddy`, `LICENSE`, `README.md`) and `{base}/v{ver}/caddy_{ver}_checksums.txt`
in sha512sum format, plus `{"tag_name": "v{ver}"}` at the releases API path.

The binaries are Debian's caddy (amd64 from this machine, arm64 from Debian's
arm64 package) with the version string set at link time replaced. So
`caddy version` prints upstream's form ("v2.6.3 h1:...") and each served
version its own number, while every other behaviour stays Debian's build.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from .debian import fetch_package_file, installed_version
from .go_string import replace_go_string
from .process import LOOPBACK, StandinError, StandinProcess, http_status, python_environment

DEBIAN_CADDY = Path("/usr/bin/caddy")
DEFAULT_CACHE_DIR = Path("/var/cache/zot-hetzner-sandbox/caddy")
APACHE_LICENSE = Path("/usr/share/common-licenses/Apache-2.0")
ARCHITECTURES = ("amd64", "arm64")
DOWNLOAD_PATH = "/caddyserver/caddy/releases/download"
RELEASES_API_PATH = "/repos/caddyserver/caddy/releases/latest"
# ELF e_machine values (ELF gABI), used to check which architecture a binary is for.
ELF_MACHINES = {"amd64": 0x3E, "arm64": 0xB7}
# A broken binary keeps this many leading bytes: a valid ELF header, then nothing.
BROKEN_BINARY_BYTES = 64 * 1024
# Part of the asset cache key: raise it when the tarball, binary patch or checksum layout changes.
ASSET_FORMAT = 2


class CaddyFault(enum.Enum):
    """A fault the release server can serve for one version and architecture."""

    # Tarball bytes differ from the ones the checksums file lists.
    CORRUPT_TARBALL = "corrupt-tarball"
    # The checksums file lists a wrong SHA-512 for the tarball.
    WRONG_CHECKSUM = "wrong-checksum"
    # The checksums file has no line for the tarball.
    MISSING_CHECKSUM = "missing-checksum"
    # Tarball and checksum match, but the `caddy` inside is truncated, so running it
    # fails (Debian's 2.6.2 amd64 binary cut to 64 KiB dies with SIGSEGV).
    BROKEN_BINARY = "broken-binary"


def tarball_name(version: str, arch: str) -> str:
    return f"caddy_{version}_linux_{arch}.tar.gz"


def checksums_name(version: str) -> str:
    return f"caddy_{version}_checksums.txt"


def elf_machine(binary: bytes) -> int:
    """Return the e_machine field of an ELF file (little-endian, as on amd64 and arm64)."""
    if binary[:4] != b"\x7fELF":
        raise StandinError("not an ELF file")
    return int.from_bytes(binary[18:20], "little")


def version_output(version: str, source_version: str) -> str:
    """Return what the stand-in caddy `version` prints for `version`: "v2.6.3 h1:...".

    Upstream release binaries print "v<version> h1:<module sum>"; the part
    after the space names the Debian build instead, since there is no
    upstream module sum to print.
    """
    return f"v{version} h1:stand-in-from-debian-caddy-{source_version}"


def rewrite_version(binary: bytes, source_version: str, version: str) -> bytes:
    """Return Debian's caddy `binary` patched to print `version_output(version, ...)`.

    Debian builds caddy with the version set through the linker, so its
    `caddy version` prints the bare "2.6.2". The stand-in prints upstream's
    form, which the deployment parses. Raises StandinError when the binary
    cannot be patched.
    """
    try:
        return replace_go_string(binary, source_version, version_output(version, source_version))
    except StandinError as exc:
        raise StandinError(
            f"cannot make caddy {version} from Debian's {source_version}: {exc}"
        ) from exc


def build_tarball(binary: bytes, license_text: bytes, readme: bytes) -> bytes:
    """Return a gzipped tar with `caddy`, `LICENSE` and `README.md`, like upstream's.

    Member times and the gzip header time are fixed, so equal inputs give
    equal bytes and equal checksums across builds.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data, mode in (
            ("LICENSE", license_text, 0o644),
            ("README.md", readme, 0o644),
            ("caddy", binary, 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", compresslevel=6, mtime=0) as zipped:
        zipped.write(raw.getvalue())
    return packed.getvalue()


def checksum_line(data: bytes, filename: str) -> str:
    """Return one sha512sum line: hex digest, two spaces, file name."""
    return f"{hashlib.sha512(data).hexdigest()}  {filename}\n"


def binary_version(binary: Path) -> str:
    """Return what `binary version` prints first, without a leading "v" (Debian: "2.6.2")."""
    try:
        result = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise StandinError(f"cannot run {binary} version: {exc}") from exc
    words = result.stdout.split()
    if not words:
        raise StandinError(f"{binary} version printed nothing")
    return words[0].removeprefix("v")


def next_patch_version(version: str) -> str:
    """Return `version` with its last number raised by one: 2.6.2 -> 2.6.3."""
    major_minor, _, patch = version.rpartition(".")
    if not patch.isdigit():
        raise StandinError(f"cannot derive a second caddy version from {version!r}")
    return f"{major_minor}.{int(patch) + 1}"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _link_or_copy(source: str, target: str) -> None:
    # Faults replace served files through a rename, so a hard link never
    # lets them reach the pristine copy.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class CaddyReleaseServer(StandinProcess):
    """Caddy release assets and the releases API on 127.0.0.1.

    `versions` defaults to the version of Debian's caddy and the next patch
    version made from it (2.6.2 and 2.6.3 on Debian 12). The last one is
    "latest" until `set_latest` changes it. `arm64_binary` defaults to
    the caddy of Debian's arm64 package of the installed version, fetched
    once into `cache_dir`; pass `architectures=("amd64",)` to skip it.
    `source_version` is the version string inside the binaries; by default
    the amd64 binary is run with `version` to read it.
    """

    name = "caddy-releases"

    def __init__(
        self,
        work_dir: Path,
        port: int | None = None,
        *,
        versions: tuple[str, ...] | None = None,
        architectures: tuple[str, ...] = ARCHITECTURES,
        amd64_binary: Path = DEBIAN_CADDY,
        arm64_binary: Path | None = None,
        source_version: str | None = None,
        cache_dir: Path = DEFAULT_CACHE_DIR,
    ) -> None:
        super().__init__(work_dir, port)
        unknown = set(architectures) - set(ELF_MACHINES)
        if unknown:
            raise StandinError(f"unsupported architectures {sorted(unknown)}; use amd64, arm64")
        self.architectures = architectures
        self.amd64_binary = amd64_binary
        self.arm64_binary = arm64_binary
        self.source_version = source_version
        self.cache_dir = cache_dir
        self.versions = versions
        self.latest: str | None = versions[-1] if versions else None
        self.served_dir = self.work_dir / "www"
        # Set by build() to the cached assets this server copies from.
        self.pristine_dir = self.cache_dir / "releases-unbuilt"

    # --- settings -----------------------------------------------------------------------

    def download_base(self, guest_port: int | None = None) -> str:
        return f"http://{LOOPBACK}:{guest_port or self.require_port()}{DOWNLOAD_PATH}"

    def releases_api(self, guest_port: int | None = None) -> str:
        return f"http://{LOOPBACK}:{guest_port or self.require_port()}{RELEASES_API_PATH}"

    def settings_overrides(self, guest_port: int | None = None) -> dict[str, object]:
        """Return settings fields that point a deployment at this server.

        `guest_port` is the port the sandbox host exposes this server on inside
        the guest; it defaults to the port on this machine.
        """
        return {
            "caddy.download_base": self.download_base(guest_port),
            "caddy.releases_api": self.releases_api(guest_port),
        }

    def tarball_url(self, version: str, arch: str) -> str:
        return f"{self.download_base()}/v{version}/{tarball_name(version, arch)}"

    def checksums_url(self, version: str) -> str:
        return f"{self.download_base()}/v{version}/{checksums_name(version)}"

    # --- building -----------------------------------------------------------------------

    def _source_binaries(self) -> dict[str, tuple[bytes, str]]:
        """Return each architecture's Debian binary and the version string inside it."""
        source_version = self.source_version or binary_version(self.amd64_binary)
        sources: dict[str, tuple[bytes, str]] = {}
        for arch in self.architectures:
            if arch == "amd64":
                path = self.amd64_binary
            elif self.arm64_binary is not None:
                path = self.arm64_binary
            else:
                debian_version = installed_version("caddy")
                if debian_version is None:
                    raise StandinError(
                        "Debian's caddy is not installed; the arm64 binary is fetched for the "
                        "installed version. Install caddy or pass architectures=('amd64',)"
                    )
                path = fetch_package_file(
                    "caddy", debian_version, "arm64", "/usr/bin/caddy", self.cache_dir
                )
            binary = path.read_bytes()
            if elf_machine(binary) != ELF_MACHINES[arch]:
                raise StandinError(f"{path} is not an {arch} binary")
            sources[arch] = (binary, source_version)
        return sources

    def build(self) -> None:
        """Make the pristine assets of every version and architecture.

        They are kept in `cache_dir` under a key made of the source binaries
        and the versions. Compressing four 40 MB binaries took about 6 s on a
        2-core machine, so a later start with the same inputs reuses them.
        """
        sources = self._source_binaries()
        if self.versions is None:
            first = next(iter(sources.values()))[1]
            self.versions = (first, next_patch_version(first))
        if self.latest is None:
            self.latest = self.versions[-1]
        key = hashlib.sha256(f"{ASSET_FORMAT}:{self.versions}".encode())
        for arch, (binary, _) in sorted(sources.items()):
            key.update(arch.encode() + hashlib.sha256(binary).digest())
        self.pristine_dir = self.cache_dir / f"releases-{key.hexdigest()[:16]}"
        if self.pristine_dir.is_dir():
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = self.pristine_dir.with_name(self.pristine_dir.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        license_text = APACHE_LICENSE.read_bytes() if APACHE_LICENSE.is_file() else b""
        for version in self.versions:
            lines = []
            for arch, (binary, source_version) in sources.items():
                binary = rewrite_version(binary, source_version, version)
                readme = (
                    f"# Caddy {version} stand-in\n\nDebian's caddy {source_version} binary for "
                    f"linux/{arch}; `caddy version` prints "
                    f"{version_output(version, source_version)}.\n"
                ).encode()
                tarball = build_tarball(binary, license_text, readme)
                name = tarball_name(version, arch)
                _write_atomic(self._asset_path(partial, version, name), tarball)
                lines.append(checksum_line(tarball, name))
            checksums = "".join(lines).encode()
            _write_atomic(self._asset_path(partial, version, checksums_name(version)), checksums)
        try:
            partial.rename(self.pristine_dir)
        except OSError:
            # Another process finished the same build first; its assets are equal.
            shutil.rmtree(partial, ignore_errors=True)

    def _asset_path(self, root: Path, version: str, name: str) -> Path:
        return root / DOWNLOAD_PATH.lstrip("/") / f"v{version}" / name

    def _served(self, version: str, name: str) -> Path:
        return self._asset_path(self.served_dir, version, name)

    def prepare(self) -> None:
        self.build()
        self.reset()

    # --- what the server serves -----------------------------------------------------------

    def reset(self) -> None:
        """Serve the pristine assets again, without faults, and the current "latest"."""
        shutil.rmtree(self.served_dir, ignore_errors=True)
        shutil.copytree(self.pristine_dir, self.served_dir, copy_function=_link_or_copy)
        self.set_latest(self.latest or "")

    def set_latest(self, version: str) -> None:
        """Make the releases API name `version` as the latest release."""
        if version not in (self.versions or ()):
            raise StandinError(f"caddy {version} is not served; versions: {self.versions}")
        self.latest = version
        assets = [
            {"name": path.name, "size": path.stat().st_size}
            for path in sorted(self._served(version, "x").parent.iterdir())
        ]
        release = {
            "tag_name": f"v{version}",
            "name": f"v{version}",
            "draft": False,
            "prerelease": False,
            "assets": assets,
        }
        api_path = self.served_dir / RELEASES_API_PATH.lstrip("/")
        _write_atomic(api_path, (json.dumps(release, indent=2) + "\n").encode())

    def inject_fault(self, fault: CaddyFault, version: str, arch: str = "amd64") -> None:
        """Serve `fault` for `version` on `arch` until `reset` is called."""
        name = tarball_name(version, arch)
        tarball_path = self._served(version, name)
        checksums_path = self._served(version, checksums_name(version))
        if not tarball_path.is_file():
            raise StandinError(f"no asset {name} is served")
        tarball = tarball_path.read_bytes()
        lines = checksums_path.read_text().splitlines(keepends=True)
        other_lines = [line for line in lines if not line.rstrip().endswith(f"  {name}")]
        if fault is CaddyFault.CORRUPT_TARBALL:
            # Flip the bytes of the second half: the gzip stream no longer matches its CRC
            # and the SHA-512 no longer matches the checksums file.
            half = len(tarball) // 2
            _write_atomic(tarball_path, tarball[:half] + bytes(b ^ 0xFF for b in tarball[half:]))
        elif fault is CaddyFault.WRONG_CHECKSUM:
            wrong = checksum_line(tarball + b"\0", name)
            _write_atomic(checksums_path, "".join([*other_lines, wrong]).encode())
        elif fault is CaddyFault.MISSING_CHECKSUM:
            _write_atomic(checksums_path, "".join(other_lines).encode())
        elif fault is CaddyFault.BROKEN_BINARY:
            with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
                members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
            broken = build_tarball(
                members["caddy"][:BROKEN_BINARY_BYTES], members["LICENSE"], members["README.md"]
            )
            _write_atomic(tarball_path, broken)
            line = checksum_line(broken, name)
            _write_atomic(checksums_path, "".join([*other_lines, line]).encode())
        else:
            raise StandinError(f"unknown fault {fault!r}")

    # --- process ------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "ops.sandbox.standins.static_server",
            "--root",
            str(self.served_dir),
            "--port",
            str(self.require_port()),
        ]

    def environment(self) -> dict[str, str]:
        return python_environment()

    def probe(self) -> bool:
        return http_status(self.releases_api()) == 200
