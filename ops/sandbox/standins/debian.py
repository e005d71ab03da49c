"""This machine's Debian apt sources, and Debian packages fetched for another architecture.

The apt proxy forwards only to the mirrors named here, and the Caddy release
server takes its arm64 binary from Debian's arm64 caddy package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .process import StandinError, run_tool

SOURCES_LIST = Path("/etc/apt/sources.list")
SOURCES_DIR = Path("/etc/apt/sources.list.d")
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class AptSource:
    """One `deb` repository: a mirror URI, its suites and components."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None
    options: dict[str, str] = field(default_factory=dict, compare=False)


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse a deb822 `.sources` file; return its enabled `deb` entries (not `deb-src`)."""
    sources: list[AptSource] = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key is not None:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(
                    uri=uri.rstrip("/"),
                    suites=tuple(fields.get("suites", "").split()),
                    components=tuple(fields.get("components", "").split()),
                    signed_by=fields.get("signed-by") or None,
                )
            )
    return sources


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse `deb [options] URI SUITE COMPONENT...` lines; `deb-src` lines are skipped."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[len("deb ") :].strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            inside, _, rest = rest[1:].partition("]")
            for option in inside.split():
                name, _, value = option.partition("=")
                options[name] = value
        parts = rest.split()
        if len(parts) < 2:
            continue
        sources.append(
            AptSource(
                uri=parts[0].rstrip("/"),
                suites=(parts[1],),
                components=tuple(parts[2:]),
                signed_by=options.get("signed-by"),
                options=options,
            )
        )
    return sources


def host_apt_sources(
    sources_list: Path = SOURCES_LIST, sources_dir: Path = SOURCES_DIR
) -> list[AptSource]:
    """Return the `deb` sources that apt on this machine uses, in the order apt reads them."""
    sources: list[AptSource] = []
    if sources_list.is_file():
        sources.extend(parse_one_line_sources(sources_list.read_text()))
    if sources_dir.is_dir():
        for path in sorted(sources_dir.iterdir()):
            if path.suffix == ".list":
                sources.extend(parse_one_line_sources(path.read_text()))
            elif path.suffix == ".sources":
                sources.extend(parse_deb822_sources(path.read_text()))
    return sources


def mirror_prefixes(sources: list[AptSource]) -> list[str]:
    """Return the distinct http:// mirror URIs of `sources` (apt proxies carry no https)."""
    prefixes: list[str] = []
    for source in sources:
        if source.uri.startswith("http://") and source.uri not in prefixes:
            prefixes.append(source.uri)
    return prefixes


def installed_version(package: str) -> str | None:
    """Return the installed Debian version of `package`, or None when it is not installed."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}\t${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or "install ok installed" not in result.stdout:
        return None
    return result.stdout.split("\t", 1)[1].strip()


def _private_apt_options(apt_dir: Path, architecture: str) -> list[str]:
    """Return apt-get options that use only `apt_dir` for lists and caches, for `architecture`.

    apt on this machine keeps its own lists; nothing here touches them or adds
    an architecture to dpkg.
    """
    return [
        "-o", f"Dir::State={apt_dir / 'state'}",
        "-o", f"Dir::State::status={apt_dir / 'state' / 'status'}",
        "-o", f"Dir::Cache={apt_dir / 'cache'}",
        "-o", f"Dir::Etc::SourceList={apt_dir / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={apt_dir / 'sources.list.d'}",
        "-o", f"Dir::Etc::PreferencesParts={apt_dir / 'preferences.d'}",
        "-o", f"APT::Architecture={architecture}",
        "-o", f"APT::Architectures::={architecture}",
        "-o", "Acquire::Languages=none",
        # Downloads land in directories owned by root; the _apt user cannot write there.
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip


def fetch_package_file(
    package: str, version: str, architecture: str, member: str, cache_dir: Path
) -> Path:
    """Return file `member` of Debian package `package`=`version` for `architecture`.

    The .deb comes from this machine's Debian mirrors through apt-get with a
    private list directory, so apt checks the Release signature and the
    package hash as usual. The extracted file is kept under `cache_dir` and
    reused on later calls.
    """
    target_dir = cache_dir / f"{package}_{version}_{architecture}"
    target = target_dir / Path(member).name
    if target.is_file():
        return target
    sources = [s for s in host_apt_sources() if s.uri.startswith(("http://", "https://"))]
    if not sources:
        raise StandinError(
            f"cannot fetch {package}:{architecture}: no http(s) apt source in "
            f"{SOURCES_LIST} or {SOURCES_DIR}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="apt-", dir=cache_dir) as scratch:
        apt_dir = Path(scratch)
        for sub in ("state/lists/partial", "cache/archives/partial", "sources.list.d",
                    "preferences.d", "download", "extract"):  # fmt: skip
            (apt_dir / sub).mkdir(parents=True)
        (apt_dir / "state" / "status").touch()
        lines = []
        for source in sources:
            keyring = source.signed_by or DEFAULT_KEYRING
            for suite in source.suites:
                components = " ".join(source.components) or "main"
                lines.append(f"deb [signed-by={keyring}] {source.uri} {suite} {components}")
        (apt_dir / "sources.list").write_text("\n".join(lines) + "\n")
        options = _private_apt_options(apt_dir, architecture)
        step = f"fetch Debian package {package}:{architecture} {version}"
        run_tool(step, ["apt-get", "-q", *options, "update"])
        download = apt_dir / "download"
        run_tool(
            step,
            ["apt-get", "-q", *options, "download", f"{package}:{architecture}={version}"],
            cwd=download,
        )
        debs = list(download.glob("*.deb"))
        if len(debs) != 1:
            raise StandinError(f"{step}: expected one .deb in {download}, found {len(debs)}")
        extract = apt_dir / "extract"
        run_tool(step, ["dpkg-deb", "-x", str(debs[0]), str(extract)])
        extracted = extract / member.lstrip("/")
        if not extracted.is_file():
            raise StandinError(f"{step}: {member} is not in {debs[0].name}")
        partial = target_dir.with_name(target_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        shutil.copy2(extracted, partial / target.name)
        shutil.rmtree(target_dir, ignore_errors=True)
        partial.rename(target_dir)
    return target
