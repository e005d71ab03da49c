"""Host-side primitives of the sandbox: commands, processes, mounts, namespaces, cgroups.

Everything here acts on this machine (never inside a guest) and raises
`SandboxError` naming the step that failed and the tail of its stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import OpsError

# Tools the harness runs on this machine, with the Debian package that ships each.
REQUIRED_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "socat": "socat",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "mount": "mount",
    "umount": "mount",
    "ssh-keygen": "openssh-client",
}

# The mount point nspawn keeps its per-machine propagation directories in. It
# refuses to clean them up on a disk file system ("Attempted to remove disk
# file system under /run/systemd/nspawn/propagate"), which is what /run is
# here because PID 1 is not systemd.
NSPAWN_RUNTIME_DIR = Path("/run/systemd/nspawn")
# Present while the tmpfs on NSPAWN_RUNTIME_DIR is one the sandbox mounted.
NSPAWN_TMPFS_MARKER = Path("/run/zot-hetzner-sandbox/nspawn-tmpfs-mounted")
RUNTIME_LOCK = Path("/run/zot-hetzner-sandbox/lock")
CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
STDERR_TAIL_LINES = 15


class SandboxError(OpsError):
    """A step of building, booting or stopping a sandbox host failed."""


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    """Return the last `lines` non-empty lines of `text`, joined by " | " for a one-line message."""
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


def run_step(
    step: str,
    argv: Sequence[str],
    *,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` on this machine as step `step`; raise SandboxError with the stderr tail on failure."""
    full_env = None if env is None else {**os.environ, **env}
    try:
        result = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            stdin=subprocess.DEVNULL if input_text is None else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SandboxError(f"{step}: command not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{step}: timed out after {timeout:.0f} s: {' '.join(argv)}") from exc
    if check and result.returncode != 0:
        raise SandboxError(
            f"{step}: {' '.join(argv)} exited {result.returncode}: "
            f"{tail(result.stderr or result.stdout)}"
        )
    return result


def require_root() -> None:
    """Raise SandboxError unless this process runs as root."""
    if os.geteuid() != 0:
        raise SandboxError(
            "sandbox hosts need root (mounts, network namespaces, systemd-nspawn): "
            "run as root, e.g. with sudo"
        )


def require_tools(tools: Mapping[str, str] = REQUIRED_TOOLS) -> None:
    """Raise SandboxError naming each missing tool and the package that ships it."""
    missing = [
        f"{tool} (package {package})" for tool, package in tools.items() if not shutil.which(tool)
    ]
    if missing:
        raise SandboxError(
            f"missing on this machine: {', '.join(missing)}; "
            "install them with scripts/install-host-packages.sh"
        )


# --- processes -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessId:
    """A pid together with its start time, so a recycled pid is never mistaken for ours."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessId:
        start = process_start_ticks(pid)
        if start is None:
            raise SandboxError(f"process {pid} exited before it could be recorded")
        return cls(pid, start)

    def alive(self) -> bool:
        """Tell whether this very process still exists (not a zombie, not a recycled pid)."""
        if process_start_ticks(self.pid) != self.start_ticks:
            return False
        return process_state(self.pid) not in (None, "Z", "X")

    def to_json(self) -> list[int]:
        return [self.pid, self.start_ticks]

    @classmethod
    def from_json(cls, value: Sequence[int]) -> ProcessId:
        return cls(int(value[0]), int(value[1]))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in brackets may contain spaces: split after its closing bracket.
    return raw[raw.rindex(")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """Return the start time of `pid` in clock ticks since boot (proc(5) field 22)."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def process_state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[0]


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def namespace_pids(pid: int) -> list[int]:
    """Return the NSpid line of /proc/PID/status: the pid in each nested pid namespace."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(part) for part in line.split()[1:]]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return []


def descendants(root: int) -> list[int]:
    """Return the pids below `root` in the process tree, found by scanning /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        ppid = parent_pid(int(entry.name))
        if ppid is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def signal_process(process: ProcessId, signum: int) -> bool:
    """Send `signum` to `process` if it is still the process we recorded; tell whether it was sent."""
    if not process.alive():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signum)
        return True
    return False


def signal_group(leader: ProcessId, signum: int) -> None:
    """Send `signum` to the process group that `leader` started with setsid, if `leader` is ours.

    The group outlives its leader (forked per-connection children keep it), so
    a dead leader is checked by start time only when it still exists.
    """
    current = process_start_ticks(leader.pid)
    if current is not None and current != leader.start_ticks:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader.pid, signum)


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[3]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    """Poll `predicate` until it returns true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop_group(leader: ProcessId, timeout: float = 5) -> None:
    """End the process group `leader` started: SIGTERM, a bounded wait, then SIGKILL."""
    signal_group(leader, signal.SIGTERM)
    if not wait_until(lambda: not group_members(leader.pid), timeout):
        signal_group(leader, signal.SIGKILL)
        wait_until(lambda: not group_members(leader.pid), timeout)


# --- mounts ----------------------------------------------------------------------------


def _unescape_mount_field(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_points() -> list[str]:
    """Return the mount points of this mount namespace, in /proc/self/mounts order."""
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return [_unescape_mount_field(line.split()[1]) for line in lines if line.strip()]


def is_mount_point(path: Path) -> bool:
    return str(path) in mount_points()


def mounts_below(path: Path) -> list[str]:
    """Return mount points at or below `path`, deepest first (the order to unmount them)."""
    prefix = str(path).rstrip("/") + "/"
    found = [point for point in mount_points() if point == str(path) or point.startswith(prefix)]
    return sorted(set(found), key=lambda point: point.count("/"), reverse=True)


def unmount_all_below(path: Path, step: str) -> None:
    """Unmount everything mounted at or below `path`, deepest first, with a bounded retry."""
    for _ in range(5):
        points = mounts_below(path)
        if not points:
            return
        for point in points:
            run_step(step, ["umount", point], check=False)
    left = mounts_below(path)
    if left:
        # A lazy unmount detaches mounts that a late process still has open.
        for point in left:
            run_step(step, ["umount", "--lazy", point], check=False)
    left = mounts_below(path)
    if left:
        raise SandboxError(f"{step}: still mounted after umount: {', '.join(left)}")


def ensure_nspawn_runtime_dir() -> None:
    """Mount a tmpfs on /run/systemd/nspawn unless something is mounted there already."""
    if is_mount_point(NSPAWN_RUNTIME_DIR):
        return
    NSPAWN_RUNTIME_DIR.mkdir(parents=True, exist_ok=True)
    run_step(
        "mount tmpfs on /run/systemd/nspawn",
        ["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", str(NSPAWN_RUNTIME_DIR)],
    )
    NSPAWN_TMPFS_MARKER.parent.mkdir(parents=True, exist_ok=True)
    NSPAWN_TMPFS_MARKER.touch()


def release_nspawn_runtime_dir() -> None:
    """Unmount the tmpfs on /run/systemd/nspawn if the sandbox mounted it and no nspawn uses it.

    The caller holds the runtime lock and has checked that no sandbox host runs.
    """
    if not NSPAWN_TMPFS_MARKER.exists():
        return
    propagate = NSPAWN_RUNTIME_DIR / "propagate"
    if propagate.is_dir() and any(propagate.iterdir()):
        return
    if is_mount_point(NSPAWN_RUNTIME_DIR):
        run_step("unmount tmpfs on /run/systemd/nspawn", ["umount", str(NSPAWN_RUNTIME_DIR)])
    NSPAWN_TMPFS_MARKER.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def runtime_lock() -> contextlib.AbstractContextManager[None]:
    """Serialize, across processes, the steps that share /run/systemd/nspawn and cgroup parents."""
    return file_lock(RUNTIME_LOCK)


def launcher_argv(cgroups: Sequence[Path], argv: Sequence[str], reboots: int = 0) -> list[str]:
    """Wrap `argv` so it starts inside `cgroups` and is run again after up to `reboots` reboots.

    systemd-nspawn exits 133 when the guest reboots; the wrapper then boots it
    again, so a guest survives `systemctl reboot` as a real server does.
    """
    moves = "".join(f'echo $$ > "${index + 1}/cgroup.procs" && ' for index in range(len(cgroups)))
    if reboots == 0:
        script = f'{moves}shift {len(cgroups)} && exec "$@"'
    else:
        script = (
            f"{moves}shift {len(cgroups)} && n=0\n"
            'while :; do "$@"; rc=$?\n'
            f'  if [ "$rc" -ne 133 ] || [ "$n" -ge {reboots} ]; then exit "$rc"; fi\n'
            "  n=$((n + 1))\n"
            "done\n"
        )
    return ["sh", "-c", script, "sh", *map(str, cgroups), *argv]


# --- network namespaces ----------------------------------------------------------------

NETNS_DIR = Path("/run/netns")


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def netns_names() -> list[str]:
    result = run_step("list network namespaces", ["ip", "netns", "list"])
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def create_netns(name: str) -> None:
    """Create network namespace `name` with its loopback up and no other interface."""
    run_step(f"create network namespace {name}", ["ip", "netns", "add", name])
    run_step(
        f"bring up lo in network namespace {name}", ["ip", "-n", name, "link", "set", "lo", "up"]
    )


def delete_netns(name: str) -> None:
    if netns_path(name).exists():
        run_step(f"delete network namespace {name}", ["ip", "netns", "delete", name])


def save_netns_handle(pid: int, handle: Path) -> None:
    """Bind-mount the network namespace of `pid` onto `handle`, so it stays enterable by path."""
    handle.parent.mkdir(parents=True, exist_ok=True)
    handle.touch(mode=0o600, exist_ok=True)
    run_step(
        f"save network namespace of pid {pid}",
        ["mount", "--bind", f"/proc/{pid}/ns/net", str(handle)],
    )


# --- cgroups ---------------------------------------------------------------------------


def create_cgroups(relative: str) -> list[Path]:
    """Create cgroup `relative` under the unified and the name=systemd hierarchy; return them.

    nspawn with --keep-unit puts its payload below the cgroup it starts in, so
    each launcher needs its own, else two instances share one payload cgroup.
    """
    created = []
    for hierarchy in CGROUP_HIERARCHIES:
        if not (hierarchy / "cgroup.procs").exists():
            raise SandboxError(
                f"create cgroup {relative}: {hierarchy} is not a mounted cgroup hierarchy; "
                "the harness expects the hybrid layout with unified and name=systemd"
            )
        path = hierarchy / relative
        path.mkdir(parents=True, exist_ok=True)
        created.append(path)
    return created


def cgroup_pids(cgroup: Path) -> list[int]:
    """Return the pids in `cgroup` and every cgroup below it."""
    pids: list[int] = []
    if not cgroup.is_dir():
        return pids
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(FileNotFoundError, OSError):
            pids.extend(int(line) for line in procs.read_text().split())
    return pids


def kill_cgroup(cgroup: Path) -> None:
    """SIGKILL every process in `cgroup` and below (cgroup.kill where the kernel has it)."""
    kill_file = cgroup / "cgroup.kill"
    if kill_file.exists():
        with contextlib.suppress(OSError):
            kill_file.write_text("1")
            return
    for pid in cgroup_pids(cgroup):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove_cgroup_tree(cgroup: Path, step: str) -> None:
    """Remove `cgroup` and its children, deepest first; they must hold no process."""
    if not cgroup.is_dir():
        return
    children = sorted(
        (path for path in cgroup.rglob("*") if path.is_dir()),
        key=lambda path: len(path.parts),
        reverse=True,
    )
    for path in [*children, cgroup]:
        for _ in range(20):
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                # EBUSY while the kernel finishes tearing down exited tasks.
                last_error = exc
                time.sleep(0.05)
        else:
            raise SandboxError(f"{step}: cannot remove cgroup {path}: {last_error}")
