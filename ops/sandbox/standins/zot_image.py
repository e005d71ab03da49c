"""An OCI image that replaces zot in sandboxes: Debian's distribution registry behind zot's CLI.

The image is built with buildah from files of this machine: Debian's
docker-registry (distribution 2.8, the same OCI distribution API as zot),
busybox-static for a shell, and jq with its shared libraries. Its entry point
`/usr/bin/zot` accepts `serve /etc/zot/config.json`, translates the zot config
(listen address, htpasswd, S3 storage) into a distribution config and runs
the registry. Each version is a separate tag with its version in the
`org.opencontainers.image.version` label and in /etc/zot-standin/version.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from importlib import resources
from pathlib import Path

from ...secrets import Secret
from ..system import unmount_all_below
from .process import LOOPBACK, StandinError, StandinProcess, http_status, run_tool

REPOSITORY = "project-zot/zot-standin"
DEFAULT_VERSIONS = ("v1", "v2")
REGISTRY_BINARY = Path("/usr/bin/docker-registry")
BUSYBOX_BINARY = Path("/bin/busybox")
JQ_BINARY = Path("/usr/bin/jq")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# zot's own image runs `/usr/bin/zot serve /etc/zot/config.json` (zot's build/Dockerfile).
ENTRYPOINT = ["/usr/bin/zot"]
COMMAND = ["serve", "/etc/zot/config.json"]
# vfs first: the overlay driver bind-mounts its storage directory onto itself,
# and that mount outlives buildah, so deleting a work directory that was not
# cleaned with remove_storage() fails with EBUSY. vfs took about 2 s per image
# build against 1 s for overlay (2-core machine).
STORAGE_DRIVERS = ("vfs", "overlay")


def shared_libraries(binary: Path) -> list[Path]:
    """Return the shared libraries and the loader that `binary` needs, as ldd lists them."""
    output = run_tool(f"list shared libraries of {binary}", ["ldd", str(binary)]).stdout
    libraries = []
    for line in output.splitlines():
        # "libjq.so.1 => /lib/x86_64-linux-gnu/libjq.so.1 (0x...)" or "/lib64/ld-linux... (0x...)"
        for word in line.split():
            if word.startswith("/"):
                libraries.append(Path(word))
                break
    return libraries


def _install(source: Path, rootfs: Path, target: str, mode: int = 0o755) -> None:
    destination = rootfs / target.lstrip("/")
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)  # follows symlinks: the image gets the real file
    destination.chmod(mode)


def _write(rootfs: Path, target: str, content: str, mode: int = 0o644) -> None:
    destination = rootfs / target.lstrip("/")
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(content)
    destination.chmod(mode)


def stage_rootfs(rootfs: Path, version: str) -> None:
    """Write the image's files into the empty directory `rootfs`."""
    image_files = resources.files(__package__) / "image"
    _write(rootfs, "/usr/bin/zot", (image_files / "zot-standin.sh").read_text(), 0o755)
    _write(
        rootfs,
        "/usr/lib/zot-standin/zot-to-distribution.jq",
        (image_files / "zot-to-distribution.jq").read_text(),
    )
    _write(rootfs, "/etc/zot-standin/version", version + "\n")

    _install(REGISTRY_BINARY, rootfs, "/usr/bin/registry")
    _install(JQ_BINARY, rootfs, "/usr/bin/jq")
    _install(BUSYBOX_BINARY, rootfs, "/bin/busybox")
    for binary in (REGISTRY_BINARY, JQ_BINARY):
        for library in shared_libraries(binary):
            _install(library, rootfs, str(library))

    applets = run_tool("list busybox applets", [str(BUSYBOX_BINARY), "--list-full"]).stdout
    for applet in applets.split():
        link = rootfs / applet
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")

    if CA_BUNDLE.is_file():
        _install(CA_BUNDLE, rootfs, str(CA_BUNDLE), 0o644)
    _write(
        rootfs, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    )
    _write(rootfs, "/etc/group", "root:x:0:\nnogroup:x:65534:\n")
    for directory in ("/etc/zot", "/var/lib/zot", "/var/log/zot", "/root"):
        (rootfs / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
    tmp = rootfs / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(stat.S_ISVTX | 0o777)


class ZotStandinImage:
    """Builds zot stand-in images into a containers-storage of its own under `work_dir`.

    The storage driver is the first of STORAGE_DRIVERS that works on this
    machine. The choice is kept in `work_dir`, so later calls and skopeo
    read the same storage.
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        self.storage_root = self.work_dir / "storage"
        self.run_root = self.work_dir / "run"
        self._driver_file = self.work_dir / "storage-driver"

    @staticmethod
    def local_reference(version: str) -> str:
        return f"localhost/{REPOSITORY}:{version}"

    @property
    def storage_driver(self) -> str | None:
        try:
            return self._driver_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _storage_options(self, driver: str) -> list[str]:
        return [
            "--root",
            str(self.storage_root),
            "--runroot",
            str(self.run_root),
            "--storage-driver",
            driver,
        ]

    def buildah(self, step: str, *args: str) -> str:
        """Run buildah on this image storage; return its stdout."""
        driver = self.storage_driver or self._choose_driver()
        return run_tool(step, ["buildah", *self._storage_options(driver), *args]).stdout

    def _choose_driver(self) -> str:
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        errors = []
        for driver in STORAGE_DRIVERS:
            try:
                container = run_tool(
                    f"try storage driver {driver}",
                    ["buildah", *self._storage_options(driver), "from", "scratch"],
                ).stdout.strip()
            except StandinError as exc:
                errors.append(str(exc))
                shutil.rmtree(self.storage_root, ignore_errors=True)
                shutil.rmtree(self.run_root, ignore_errors=True)
                continue
            run_tool(
                "remove probe container",
                ["buildah", *self._storage_options(driver), "rm", container],
            )
            self._driver_file.write_text(driver + "\n")
            return driver
        raise StandinError(f"no buildah storage driver works here: {' | '.join(errors)}")

    def storage_reference(self, reference: str) -> str:
        """Return the containers-storage reference of `reference` for skopeo and podman."""
        driver = self.storage_driver or self._choose_driver()
        return f"containers-storage:[{driver}@{self.storage_root}+{self.run_root}]{reference}"

    def build(self, version: str = DEFAULT_VERSIONS[0]) -> str:
        """Build the stand-in image for `version`; return its local reference."""
        for binary, package in (
            (REGISTRY_BINARY, "docker-registry"),
            (BUSYBOX_BINARY, "busybox-static"),
            (JQ_BINARY, "jq"),
        ):
            if not binary.is_file():
                raise StandinError(
                    f"{binary} not found: install package {package} "
                    "(scripts/install-host-packages.sh)"
                )
        rootfs = self.work_dir / f"rootfs-{version}"
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.mkdir(parents=True)
        stage_rootfs(rootfs, version)
        reference = self.local_reference(version)
        container = self.buildah("create a build container", "from", "scratch").strip()
        try:
            self.buildah("copy the image files", "copy", container, f"{rootfs}/", "/")
            labels = {
                "org.opencontainers.image.title": "zot stand-in",
                "org.opencontainers.image.version": version,
                "org.opencontainers.image.description": (
                    "Debian's distribution registry behind zot's command line and config"
                ),
            }
            label_options = [f"--label={key}={value}" for key, value in labels.items()]
            self.buildah(
                "set the image config",
                "config",
                f"--entrypoint={json.dumps(ENTRYPOINT)}",
                f"--cmd={json.dumps(COMMAND)}",
                "--port=5000/tcp",
                "--env=PATH=/usr/bin:/bin",
                "--workingdir=/",
                *label_options,
                container,
            )
            self.buildah("commit the image", "commit", "--rm", container, reference)
        except BaseException:
            self.buildah("remove the build container", "rm", container)
            raise
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        return reference

    def inspect(self, reference: str) -> dict:
        """Return `buildah inspect` of image `reference` as parsed JSON."""
        output = self.buildah("inspect the image", "inspect", "--type", "image", reference)
        return json.loads(output)

    def remove_storage(self) -> None:
        """Remove every container and image of this storage, then the storage itself."""
        if self.storage_driver is not None:
            self.buildah("remove build containers", "rm", "--all")
            self.buildah("remove images", "rmi", "--all", "--force")
        # The overlay driver bind-mounts its own directory; unmount before deleting.
        unmount_all_below(self.storage_root, "unmount the image storage")
        shutil.rmtree(self.storage_root, ignore_errors=True)
        shutil.rmtree(self.run_root, ignore_errors=True)
        self._driver_file.unlink(missing_ok=True)


class ZotStandinOnHost(StandinProcess):
    """Runs a zot stand-in image on this machine with chroot, for tests without a guest.

    NOTE: podman on this kind of machine cannot start containers (crun 1.8.1
    fails on the hybrid cgroup layout and on raising rlimits without
    CAP_SYS_RESOURCE), so this runs the image's file system under chroot with
    the network of this machine. It checks the image's files, entry point and
    config translation, not podman's run options.

    `zot_config` is zot's config without http.address and http.port, which
    are set to 127.0.0.1 and this stand-in's port. `files` maps paths inside
    the image (e.g. the htpasswd file) to their content, written with mode
    0600. `secrets` become the registry's environment (e.g. AWS_* keys).
    """

    name = "zot-standin"
    # This machine's AWS_CA_BUNDLE and proxy variables would change the registry's S3 client.
    inherit_environment = False

    def __init__(
        self,
        work_dir: Path,
        image: ZotStandinImage,
        reference: str,
        zot_config: dict,
        port: int | None = None,
        *,
        files: dict[str, bytes] | None = None,
        secrets: dict[str, Secret] | None = None,
    ) -> None:
        super().__init__(work_dir, port)
        self.image = image
        self.reference = reference
        self.zot_config = zot_config
        self.files = files or {}
        self.secrets = secrets or {}
        self.container: str | None = None
        self.rootfs: Path | None = None

    def path_in_image(self, path: str) -> Path:
        """Return where `path` of the running image is on this machine."""
        if self.rootfs is None:
            raise StandinError("the zot stand-in is not mounted; call start() first")
        return self.rootfs / path.lstrip("/")

    def prepare(self) -> None:
        self.container = self.image.buildah(
            "create a container for the zot stand-in", "from", self.reference
        ).strip()
        self.rootfs = Path(
            self.image.buildah("mount the zot stand-in", "mount", self.container).strip()
        )
        # A container runtime provides /dev; chroot does not, and the shell
        # opens /dev/null for every background job.
        null = self.path_in_image("/dev/null")
        null.parent.mkdir(exist_ok=True)
        if not null.exists():
            os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        config = json.loads(json.dumps(self.zot_config))
        config.setdefault("http", {}).update(address=LOOPBACK, port=str(self.require_port()))
        _write(self.rootfs, "/etc/zot/config.json", json.dumps(config, indent=2), 0o644)
        for path, content in self.files.items():
            target = self.path_in_image(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(0o600)

    def command(self) -> list[str]:
        assert self.rootfs is not None
        chroot = shutil.which("chroot")
        if chroot is None:
            raise StandinError("chroot not found: install package coreutils")
        return [chroot, str(self.rootfs), *ENTRYPOINT, *COMMAND]

    def environment(self) -> dict[str, str]:
        # The child's environment is readable only by root (/proc/PID/environ), unlike argv.
        return {"PATH": "/usr/bin:/bin", **{k: v.reveal() for k, v in self.secrets.items()}}

    def probe(self) -> bool:
        return http_status(f"{self.url}/v2/") in (200, 401)

    def stop(self) -> None:
        super().stop()
        if self.container is not None:
            self.image.buildah("unmount the zot stand-in", "umount", self.container)
            self.image.buildah("remove the zot stand-in container", "rm", self.container)
            self.container = None
            self.rootfs = None
