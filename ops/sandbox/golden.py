"""The golden root filesystem: a Debian 12 tree that every sandbox host boots from.

It contains what a fresh Hetzner Debian 12 image has (sshd, cloud-init, sudo,
python3, locales, curl) and nothing the bootstrap installs itself (podman,
caddy, ufw), so the bootstrap runs its own apt steps as on a real server.
The tree is cached under a directory named after a hash of the recipe: it is
built once and rebuilt only when the recipe changes. A build goes into a
temporary directory that is renamed when complete, so an interrupted build
never leaves a half-built golden tree behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import paths
from .system import (
    SandboxError,
    create_cgroups,
    ensure_nspawn_runtime_dir,
    file_lock,
    launcher_argv,
    mounts_below,
    release_nspawn_runtime_dir,
    remove_cgroup_tree,
    require_root,
    require_tools,
    run_step,
    runtime_lock,
    unmount_all_below,
)

APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
SUITE = "bookworm"

# Bump when the build steps below change in a way the recipe fields do not show.
BUILD_FORMAT = 1

DATASOURCE_CFG = "/etc/cloud/cloud.cfg.d/90-zot-hetzner-sandbox-datasource.cfg"
CONTAINERS_CONF = "/etc/containers/containers.conf"

GOLDEN_FILES = {
    # NoCloud reads user-data and meta-data from /var/lib/cloud/seed/nocloud/,
    # where each instance's seed is written before its first boot. Hetzner
    # Cloud servers accept the project's SSH keys for root, which Debian's
    # cloud.cfg (disable_root: true) would turn into a "log in as debian" stub.
    DATASOURCE_CFG: "datasource_list: [ NoCloud, None ]\ndisable_root: false\n",
    # Sandbox-only adaptation, never written on a real server. The container
    # this harness runs in lacks CAP_SYS_RESOURCE and caps RLIMIT_MEMLOCK at
    # 8 MiB, so crun 1.8.1 (Debian 12) fails with "setrlimit (RLIM_MEMLOCK):
    # Operation not permitted" while runc works. The guest's cgroup v2 tree has
    # no pids controller, so a pids limit cannot be set either. The file is
    # inert until the bootstrap installs podman.
    CONTAINERS_CONF: '[containers]\npids_limit = 0\n\n[engine]\nruntime = "runc"\n',
    "/etc/hostname": "debian\n",
    "/etc/hosts": (
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
    ),
    # The guest's network namespace has only lo: a loopback resolver makes a
    # lookup fail at once instead of waiting for an unreachable name server.
    "/etc/resolv.conf": "nameserver 127.0.0.1\n",
    # systemd fills an empty machine-id on first boot, so every instance gets its own.
    "/etc/machine-id": "",
}


@dataclass(frozen=True)
class GoldenRecipe:
    """Everything that decides the content of a golden tree; its hash names the cache directory."""

    mirror: str
    security_mirror: str
    suite: str = SUITE
    # debootstrap --include: what the tree needs to boot at all.
    bootstrap_packages: tuple[str, ...] = (
        "systemd",
        "systemd-sysv",
        "dbus",
        "iproute2",
        "ca-certificates",
    )
    # What a fresh Hetzner Debian 12 image has. runc is the sandbox-only
    # exception: podman (installed later by the bootstrap) depends on
    # "crun | runc" and apt would pick crun, which fails here (see CONTAINERS_CONF).
    packages: tuple[str, ...] = (
        "openssh-server",
        "cloud-init",
        "sudo",
        "python3",
        "locales",
        "curl",
        "ca-certificates",
        "iproute2",
        "systemd",
        "dbus",
        "runc",
    )
    locale: str = "en_US.UTF-8"
    files: tuple[tuple[str, str], ...] = field(
        default_factory=lambda: tuple(sorted(GOLDEN_FILES.items()))
    )
    build_format: int = BUILD_FORMAT

    def digest(self) -> str:
        encoded = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]


def parse_deb822_sources(text: str) -> list[dict[str, str]]:
    """Parse an apt deb822 .sources file into one dict per stanza (comments dropped)."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key is not None:
            current[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            key = key.strip()
            current[key] = value.strip()
    return stanzas


def host_mirrors(sources: Path = APT_SOURCES) -> tuple[str, str]:
    """Return the Debian mirror and security mirror that apt on this machine uses."""
    try:
        stanzas = parse_deb822_sources(sources.read_text())
    except FileNotFoundError as exc:
        raise SandboxError(
            f"read apt mirror: {sources} not found; the golden tree is fetched from "
            "the mirror this machine's apt uses"
        ) from exc
    mirror = security = None
    for stanza in stanzas:
        suites = stanza.get("Suites", "").split()
        uris = stanza.get("URIs", "").split()
        if not uris or "deb" not in stanza.get("Types", "").split():
            continue
        if SUITE in suites and mirror is None:
            mirror = uris[0]
        if f"{SUITE}-security" in suites and security is None:
            security = uris[0]
    if mirror is None:
        raise SandboxError(f"read apt mirror: no 'deb' stanza for suite {SUITE} in {sources}")
    return mirror, security or mirror.rstrip("/") + "-security"


def default_recipe() -> GoldenRecipe:
    mirror, security = host_mirrors()
    return GoldenRecipe(mirror=mirror, security_mirror=security)


def golden_dir(recipe: GoldenRecipe) -> Path:
    return paths.sandbox_root() / f"golden-{recipe.digest()}"


def ensure_golden(recipe: GoldenRecipe | None = None, log: Callable[[str], None] = print) -> Path:
    """Return the golden tree for `recipe`, building it first when it is not cached."""
    require_root()
    require_tools()
    recipe = recipe or default_recipe()
    target = golden_dir(recipe)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / "golden.lock"):
        # Another process may have finished the same build while this one waited.
        if target.is_dir():
            return target
        _remove_stale_builds(target.parent)
        started = time.monotonic()
        partial = target.parent / f"{target.name}.partial-{os.getpid()}"
        log(f"building golden tree {target.name} from {recipe.mirror} (about a minute)")
        try:
            _build(recipe, partial, log)
            partial.rename(target)
        except BaseException:
            _remove_tree(partial)
            raise
        info = {"recipe": asdict(recipe), "built_seconds": round(time.monotonic() - started, 1)}
        (target.parent / f"{target.name}.json").write_text(json.dumps(info, indent=2) + "\n")
        log(f"golden tree ready in {info['built_seconds']} s: {target}")
        return target


def _remove_stale_builds(parent: Path) -> None:
    # Only called under the build lock, so no other build is running.
    for stale in parent.glob("golden-*.partial-*"):
        _remove_tree(stale)


def _remove_tree(path: Path) -> None:
    """Delete `path` after unmounting what debootstrap may have left mounted inside it."""
    if not path.exists():
        return
    unmount_all_below(path, f"unmount leftovers of {path.name}")
    if mounts_below(path):
        raise SandboxError(f"refusing to delete {path}: it still contains mount points")
    shutil.rmtree(path)


def _build(recipe: GoldenRecipe, dest: Path, log: Callable[[str], None]) -> None:
    log(f"debootstrap {recipe.suite} minbase")
    run_step(
        "debootstrap",
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(recipe.bootstrap_packages)}",
            recipe.suite,
            str(dest),
            recipe.mirror,
        ],
        timeout=1200,
    )
    _write_apt_sources(recipe, dest)

    log(f"apt-get install {' '.join(recipe.packages)}")
    _run_in_tree(
        "install packages",
        dest,
        "apt-get update -qq && apt-get install -y -qq -o Dpkg::Use-Pty=0 "
        + " ".join(recipe.packages),
        timeout=1200,
    )

    # Without the locale cloud-init's locale module fails and marks
    # cloud-config.service failed.
    locale_line = f"{recipe.locale} {recipe.locale.split('.')[-1]}"
    _run_in_tree(
        "generate locale",
        dest,
        f"sed -i 's/^# *{locale_line}$/{locale_line}/' /etc/locale.gen && "
        f"grep -qx '{locale_line}' /etc/locale.gen && locale-gen && "
        f"update-locale LANG={recipe.locale}",
    )

    # Package lists are dropped as in a cloud image, so the bootstrap's own
    # `apt-get update` is what makes packages installable.
    _run_in_tree("clean apt caches", dest, "apt-get clean && rm -rf /var/lib/apt/lists/*")

    for path, content in recipe.files:
        target = dest / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        target.write_text(content)

    # dbus keeps its own copy of the machine id; drop it with the id itself.
    (dest / "var/lib/dbus/machine-id").unlink(missing_ok=True)


def _write_apt_sources(recipe: GoldenRecipe, dest: Path) -> None:
    (dest / "etc/apt/sources.list").unlink(missing_ok=True)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    text = (
        f"Types: deb\nURIs: {recipe.mirror}\n"
        f"Suites: {recipe.suite} {recipe.suite}-updates\nComponents: main\nSigned-By: {keyring}\n\n"
        f"Types: deb\nURIs: {recipe.security_mirror}\n"
        f"Suites: {recipe.suite}-security\nComponents: main\nSigned-By: {keyring}\n"
    )
    sources = dest / "etc/apt/sources.list.d/debian.sources"
    sources.parent.mkdir(parents=True, exist_ok=True)
    sources.write_text(text)


def _run_in_tree(step: str, tree: Path, script: str, timeout: float = 300) -> None:
    """Run `script` with /bin/sh inside `tree` with systemd-nspawn, without booting it."""
    nspawn = [
        "systemd-nspawn",
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--pipe",
        f"--directory={tree}",
        "--setenv=DEBIAN_FRONTEND=noninteractive",
        "--setenv=LC_ALL=C.UTF-8",
        "/bin/sh",
        "-ec",
        script,
    ]
    with runtime_lock():
        ensure_nspawn_runtime_dir()
    cgroups = create_cgroups(f"{paths.CGROUP_PARENT}/golden-build-{os.getpid()}")
    try:
        run_step(
            step,
            launcher_argv(cgroups, nspawn),
            timeout=timeout,
            env={"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
        )
    finally:
        for cgroup in cgroups:
            remove_cgroup_tree(cgroup, f"{step}: remove cgroup")
        with runtime_lock():
            release_nspawn_runtime_dir()
