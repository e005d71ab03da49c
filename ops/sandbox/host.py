"""Sandbox hosts: Debian 12 systems booted with systemd-nspawn from the golden tree.

Each host is a copy-on-write overlay over the golden tree, seeded with
NoCloud user-data and meta-data so that real cloud-init applies them on the
first boot, as Hetzner's metadata service does on a new server. The host
runs in its own network namespace that contains only `lo`; loopback-only
forwarders connect it with this machine (see forward.py).

Every resource of a host is recorded in a state file in its instance
directory, so another process (`inv sandbox.list`, `inv sandbox.down`) can
find and release it. The resources are the overlay mount, the network
namespace, the cgroups, and the launcher and forwarder processes. Processes
are recorded by pid and start time, so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from . import forward, paths
from .forward import Forwarder
from .system import (
    CGROUP_HIERARCHIES,
    ProcessId,
    SandboxError,
    cgroup_pids,
    create_cgroups,
    create_netns,
    delete_netns,
    descendants,
    ensure_nspawn_runtime_dir,
    kill_cgroup,
    launcher_argv,
    mounts_below,
    namespace_pids,
    netns_path,
    release_nspawn_runtime_dir,
    remove_cgroup_tree,
    require_root,
    require_tools,
    run_step,
    runtime_lock,
    save_netns_handle,
    signal_process,
    tail,
    unmount_all_below,
    wait_until,
)

log = logging.getLogger(__name__)

DEFAULT_FORWARDS = (22, 80, 443)
SEED_DIR = "var/lib/cloud/seed/nocloud"
STATE_FILE = "state.json"
# Guest reboots (`systemctl reboot`) the launcher follows before it gives up.
REBOOT_LIMIT = 20

BOOTING = "booting"
RUNNING = "running"
# The launcher ended without `stop()`: the guest powered off or crashed.
EXITED = "exited"
STOPPED = "stopped"
FAILED = "failed"

# Environment of systemd-nspawn (systemd 252) that a guest needs on this machine.
# The host has hybrid cgroups (v1 controllers plus a v2 "unified" tree). The
# first variable gives the guest a cgroup v2 tree as on a real Debian 12
# server, because crun and runc fail on the read-only v1 controllers. The
# second makes /proc/sys/net writable, so netavark can set sysctls in the
# guest's own network namespace ("Sysctl error: Read-only file system").
NSPAWN_ENV = {
    "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",
    "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network",
}
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SIGRTMIN_POWEROFF = signal.SIGRTMIN + 4


def nspawn_argv(machine: str, root: Path, netns: Path, containers_dir: Path) -> list[str]:
    """Return the systemd-nspawn command line that boots `root` as `machine`.

    Each flag was needed on this kind of machine, where PID 1 is not systemd,
    there is no system bus and cgroups are hybrid. The comments name the
    failure seen without a flag.
    """
    return [
        "systemd-nspawn",
        f"--directory={root}",
        f"--machine={machine}",
        # "Failed to open system bus" without these two: no systemd on the host.
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path={netns}",
        # netavark configures the guest's network namespace.
        "--capability=CAP_NET_ADMIN",
        # crun needs the keyring calls ("EPERM"), runc queries bpf programs.
        "--system-call-filter=add_key keyctl request_key bpf",
        # podman storage on the overlay root was never tested; a real directory works.
        f"--bind={containers_dir}:/var/lib/containers",
        # Keep the guest's own resolv.conf; nspawn would copy this machine's.
        "--resolv-conf=off",
        "--boot",
        "--console=read-only",
    ]


@dataclass
class HostState:
    """Resources of one sandbox host on this machine, saved as JSON in its instance directory."""

    name: str
    machine: str
    netns: str
    golden: str
    instance_dir: str
    root: str
    upper: str
    work: str
    containers_dir: str
    runtime_dir: str
    host_netns_handle: str
    console_log: str
    cgroups: list[str]
    ssh_user: str = "root"
    ssh_key: str | None = None
    status: str = BOOTING
    launcher: list[int] | None = None
    forwarders: list[dict] = field(default_factory=list)
    booted_at: float = 0.0

    @property
    def path(self) -> Path:
        return Path(self.instance_dir) / STATE_FILE

    def save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump(asdict(self), handle, indent=2)
            handle.write("\n")
        temporary.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> HostState:
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class CloudInitStatus:
    """The result of `cloud-init status` in a guest."""

    status: str
    errors: list[str]
    detail: str
    # Output of `cloud-init status --long`.
    long_output: str
    seconds: float

    @property
    def done(self) -> bool:
        return self.status == "done" and not self.errors


class SandboxHost:
    """A booted (or recorded) sandbox host; see `boot()`."""

    def __init__(self, state: HostState, launcher: subprocess.Popen | None = None) -> None:
        self.state = state
        # Set only in the process that booted the host; it reaps the launcher.
        self._launcher_process = launcher
        self._leader: ProcessId | None = None

    def __repr__(self) -> str:
        return f"SandboxHost({self.name!r}, status={self.status!r}, ports={self.ports})"

    # --- facts -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def instance_dir(self) -> Path:
        return Path(self.state.instance_dir)

    @property
    def root(self) -> Path:
        """The merged tree of the guest, as seen from this machine."""
        return Path(self.state.root)

    @property
    def ssh_key(self) -> Path | None:
        return Path(self.state.ssh_key) if self.state.ssh_key else None

    @property
    def forwarders(self) -> list[Forwarder]:
        return [Forwarder.from_json(item) for item in self.state.forwarders]

    @property
    def ports(self) -> dict[int, int]:
        """Map each forwarded guest port to its port on this machine's 127.0.0.1."""
        return {
            item.target_port: item.listen_port
            for item in self.forwarders
            if item.direction == forward.TO_GUEST
        }

    def port(self, guest_port: int) -> int:
        """Return the port on 127.0.0.1 of this machine that forwards to `guest_port`."""
        try:
            return self.ports[guest_port]
        except KeyError:
            raise SandboxError(
                f"guest port {guest_port} of {self.name} is not forwarded; "
                f"call add_forward({guest_port}) or boot with it in forwards"
            ) from None

    @property
    def ssh_port(self) -> int:
        return self.port(22)

    @property
    def launcher(self) -> ProcessId | None:
        return ProcessId.from_json(self.state.launcher) if self.state.launcher else None

    def _launcher_alive(self) -> bool:
        if self._launcher_process is not None and self._launcher_process.poll() is not None:
            return False
        return self.launcher is not None and self.launcher.alive()

    @property
    def status(self) -> str:
        if self.state.status in (BOOTING, RUNNING) and not self._launcher_alive():
            return EXITED
        return self.state.status

    def leader(self, timeout: float = 0) -> ProcessId:
        """Return the guest's PID 1 (systemd), found again after a reboot."""
        if self._leader is not None and self._leader.alive():
            return self._leader
        found: list[ProcessId] = []

        def find() -> bool:
            if not self._launcher_alive():
                return True
            for pid in descendants(self.launcher.pid):
                nspids = namespace_pids(pid)
                if len(nspids) > 1 and nspids[-1] == 1 and _comm(pid) == "systemd":
                    found.append(ProcessId.of(pid))
                    return True
            return False

        wait_until(find, timeout, interval=0.05)
        if not found:
            if self._launcher_alive():
                problem = f"guest systemd not found within {timeout:.0f} s"
            else:
                exit_code = self._launcher_process.returncode if self._launcher_process else None
                problem = "systemd-nspawn exited" + (
                    f" {exit_code}" if exit_code is not None else ""
                )
            raise SandboxError(f"{self.name}: {problem}; console: {tail(self.console_log(40), 8)}")
        self._leader = found[0]
        return self._leader

    # --- commands in the guest ---------------------------------------------------------

    def guest_argv(self, command: str | Sequence[str]) -> list[str]:
        """Return the nsenter command line that runs `command` as root in the guest.

        A str runs with /bin/sh -c; a sequence runs as it is. The environment is
        reset to what a root login has, not this process's. The command starts
        in the host's cgroups, so stop() also ends anything it leaves running.
        """
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        nsenter = [
            "nsenter",
            f"--target={self.leader().pid}",
            "--all",
            "--root",
            "--wd",
            "env",
            "-i",
            f"PATH={GUEST_PATH}",
            "HOME=/root",
            "LANG=C.UTF-8",
            *argv,
        ]
        return launcher_argv([Path(cgroup) for cgroup in self.state.cgroups], nsenter)

    def run(
        self,
        command: str | Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` in the guest as root; raise SandboxError on a non-zero exit when `check`.

        Pass secrets through `input_text` (stdin), never in `command`.
        """
        argv = self.guest_argv(command)
        command_text = command if isinstance(command, str) else " ".join(command)
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(input_text, timeout=timeout)
        except subprocess.TimeoutExpired:
            # nsenter forks into the guest's pid namespace; the child keeps our process group.
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise SandboxError(
                f"run in {self.name}: timed out after {timeout:.0f} s: {command_text}"
            ) from None
        result = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise SandboxError(
                f"run in {self.name}: {command_text} exited {result.returncode}: {tail(stderr or stdout)}"
            )
        return result

    def journal(self, unit: str | None = None, lines: int = 300) -> str:
        """Return the guest's journal of this boot (of `unit` only, if given)."""
        argv = ["journalctl", "--no-pager", "--boot", "--lines", str(lines)]
        if unit:
            argv += ["--unit", unit]
        result = self.run(argv, check=False, timeout=30)
        return result.stdout + result.stderr

    def cloud_init_logs(self, lines: int = 200) -> str:
        """Return cloud-init's status and the tail of its logs, for a failure report."""
        script = (
            "cloud-init status --long; "
            f"echo '--- /var/log/cloud-init-output.log'; tail -n {lines} /var/log/cloud-init-output.log; "
            f"echo '--- /var/log/cloud-init.log (WARNING and worse)'; "
            f"grep -E 'WARNING|ERROR|CRITICAL|Traceback' /var/log/cloud-init.log | tail -n {lines}"
        )
        result = self.run(script, check=False, timeout=30)
        return result.stdout + result.stderr

    def console_log(self, lines: int = 200) -> str:
        """Return the tail of the guest's console output (what systemd-nspawn printed)."""
        try:
            text = Path(self.state.console_log).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- readiness ---------------------------------------------------------------------

    def host_keys(self) -> list[str]:
        """Return the guest's current SSH host public keys as known_hosts lines for its port."""
        result = self.run("cat /etc/ssh/ssh_host_*_key.pub", check=False, timeout=15)
        entries = []
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                entries.append(f"[127.0.0.1]:{self.ssh_port} {parts[0]} {parts[1]}")
        return entries

    def write_known_hosts(self) -> Path:
        """Write the guest's host keys to a known_hosts file in the instance directory; return it."""
        path = self.instance_dir / "known_hosts"
        path.write_text("".join(f"{line}\n" for line in self.host_keys()))
        return path

    def connection(self, user: str | None = None, connect_timeout: int = 10):
        """Return a fabric Connection to the guest's sshd that checks its host keys.

        The keys are read from the guest through nsenter, so a stale entry in
        ~/.ssh/known_hosts for the same loopback port never matters.
        """
        import fabric
        import paramiko

        if self.ssh_key is None:
            raise SandboxError(f"{self.name}: no SSH key recorded; boot it with ssh_key=PATH")
        connection = fabric.Connection(
            "127.0.0.1",
            # No stdin mirroring by default: under pytest (or any caller without
            # a terminal) reading stdin fails. A run() call can still pass in_stream.
            config=fabric.Config(overrides={"run": {"in_stream": False}}),
            user=user or self.state.ssh_user,
            port=self.ssh_port,
            connect_timeout=connect_timeout,
            connect_kwargs={
                "key_filename": str(self.ssh_key),
                "look_for_keys": False,
                "allow_agent": False,
            },
        )
        host_keys = connection.client.get_host_keys()
        for line in self.host_keys():
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            if entry is not None:
                host_keys.add(entry.hostnames[0], entry.key.get_name(), entry.key)
        connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return connection

    def wait_for_ssh(self, timeout: float = 60) -> float:
        """Wait until a key login and `true` succeed over the forwarded port; return the seconds waited.

        Without a recorded key, wait until sshd sends its banner instead.
        """
        import paramiko

        started = time.monotonic()
        errors: list[str] = []

        def ready() -> bool:
            if not self._launcher_alive():
                raise SandboxError(
                    f"{self.name}: guest stopped while waiting for ssh; "
                    f"console: {tail(self.console_log(40), 8)}"
                )
            try:
                # The banner check is cheap and keeps paramiko from logging each refused attempt.
                if not _ssh_banner(self.ssh_port) or self.ssh_key is None:
                    return self.ssh_key is None and _ssh_banner(self.ssh_port)
                with self.connection(connect_timeout=5) as connection:
                    connection.run("true", hide=True, timeout=10)
                return True
            except (OSError, EOFError, paramiko.SSHException, SandboxError) as exc:
                errors[:] = [f"{type(exc).__name__}: {exc}"]
                return False

        if not wait_until(ready, timeout, interval=0.25):
            raise SandboxError(
                f"{self.name}: no ssh login on 127.0.0.1:{self.ssh_port} within {timeout:.0f} s "
                f"(last error: {errors[0] if errors else 'none'})"
            )
        return time.monotonic() - started

    def wait_for_cloud_init(self, timeout: float = 300) -> CloudInitStatus:
        """Wait for cloud-init to finish its boot stages; return its final status and errors.

        Raises SandboxError with the status so far when `timeout` passes first.
        """
        started = time.monotonic()
        self.leader(timeout=min(timeout, 30))
        remaining = max(1.0, timeout - (time.monotonic() - started))
        try:
            waited = self.run(
                ["cloud-init", "status", "--wait", "--long"], check=False, timeout=remaining
            )
        except SandboxError:
            current = self.run(["cloud-init", "status", "--long"], check=False, timeout=15)
            raise SandboxError(
                f"{self.name}: cloud-init did not finish within {timeout:.0f} s; "
                f"status: {tail(current.stdout, 6)}"
            ) from None
        report = self.run(["cloud-init", "status", "--format", "json"], check=False, timeout=15)
        try:
            data = json.loads(report.stdout)
        except json.JSONDecodeError:
            raise SandboxError(
                f"{self.name}: cloud-init status --format json returned no JSON: "
                f"{tail(report.stdout + report.stderr)}"
            ) from None
        return CloudInitStatus(
            status=str(data.get("status", "unknown")),
            errors=[str(error) for error in data.get("errors", [])],
            detail=str(data.get("detail", "")),
            long_output=waited.stdout,
            seconds=time.monotonic() - started,
        )

    # --- forwarders --------------------------------------------------------------------

    def _log_path(self, label: str) -> Path:
        return self.instance_dir / f"{label}.log"

    def add_forward(self, guest_port: int) -> int:
        """Forward a free port of this machine's 127.0.0.1 to `guest_port`; return that port."""
        if guest_port in self.ports:
            return self.ports[guest_port]
        forwarder = forward.forward_to_guest(
            netns_path(self.state.netns), guest_port, self._log_path(f"forward-{guest_port}")
        )
        self.state.forwarders.append(forwarder.to_json())
        self.state.save()
        return forwarder.listen_port

    def expose_host_port(self, host_port: int, guest_port: int | None = None) -> int:
        """Make this machine's 127.0.0.1:host_port reachable in the guest at 127.0.0.1:guest_port.

        Returns the guest port (`host_port` when `guest_port` is not given).
        """
        guest_port = guest_port or host_port
        forwarder = forward.forward_to_host(
            netns_path(self.state.netns),
            Path(self.state.host_netns_handle),
            host_port,
            guest_port,
            self._log_path(f"expose-{host_port}"),
        )
        self.state.forwarders.append(forwarder.to_json())
        self.state.save()
        return guest_port

    # --- lifecycle ---------------------------------------------------------------------

    def reboot(self, timeout: float = 60) -> None:
        """Reboot the guest with `systemctl reboot` and wait for its new systemd."""
        old = self.leader()
        self.run(["systemctl", "reboot"], check=False, timeout=30)
        self._leader = None
        if not wait_until(lambda: not old.alive(), timeout):
            raise SandboxError(
                f"{self.name}: systemd did not exit within {timeout:.0f} s of reboot"
            )
        self.leader(timeout=timeout)

    def stop(self, timeout: float = 30) -> None:
        """Power the guest off and release every resource it has on this machine.

        SIGRTMIN+4 requests a clean poweroff from the guest's systemd. After
        `timeout` seconds whatever is left in the host's cgroup is killed. Then
        forwarders, mounts, the network namespace and the cgroups are removed.
        Safe to call again, and from a process other than the one that booted
        the host.
        """
        state = self.state
        if self._launcher_alive():
            log.info("%s: powering off", self.name)
            with contextlib.suppress(SandboxError):
                signal_process(self.leader(timeout=2), SIGRTMIN_POWEROFF)
            if not wait_until(lambda: not self._launcher_alive(), timeout, interval=0.1):
                log.warning("%s: no poweroff within %.0f s; killing its cgroup", self.name, timeout)
            for cgroup in state.cgroups:
                kill_cgroup(Path(cgroup))
            if not wait_until(lambda: not self._launcher_alive(), 10, interval=0.1):
                raise SandboxError(f"{self.name}: launcher {self.launcher.pid} survived SIGKILL")
        if self._launcher_process is not None:
            self._launcher_process.wait(timeout=5)
        forward.stop_all(self.forwarders)
        state.forwarders = []
        unmount_all_below(Path(state.root), f"{self.name}: unmount root")
        unmount_all_below(Path(state.runtime_dir), f"{self.name}: unmount runtime handles")
        delete_netns(state.netns)
        for cgroup in state.cgroups:
            kill_cgroup(Path(cgroup))
            wait_until(lambda cgroup=cgroup: not cgroup_pids(Path(cgroup)), 5)
            remove_cgroup_tree(Path(cgroup), f"{self.name}: remove cgroup")
        with runtime_lock():
            if not any(
                host.status in (RUNNING, BOOTING) for host in list_hosts() if host.name != self.name
            ):
                release_nspawn_runtime_dir()
                _remove_empty_cgroup_parents()
        shutil.rmtree(state.runtime_dir, ignore_errors=True)
        if state.status in (BOOTING, RUNNING):
            state.status = STOPPED
        state.save()
        log.info("%s: stopped", self.name)

    def destroy(self, timeout: float = 30) -> None:
        """Stop the host and delete its instance directory (overlay upper layer, logs, keys)."""
        self.stop(timeout)
        if mounts_below(self.instance_dir):
            raise SandboxError(f"refusing to delete {self.instance_dir}: mount points remain")
        shutil.rmtree(self.instance_dir)
        log.info("%s: destroyed", self.name)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def _ssh_banner(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        return connection.recv(8).startswith(b"SSH-")


def _cgroup_parents() -> list[Path]:
    return [hierarchy / paths.CGROUP_PARENT for hierarchy in CGROUP_HIERARCHIES]


def _remove_empty_cgroup_parents() -> None:
    for parent in _cgroup_parents():
        # Fails while another process (a golden build, say) still has a cgroup below.
        with contextlib.suppress(OSError):
            parent.rmdir()


# --- boot and lookup -------------------------------------------------------------------


def meta_data(name: str, meta: Mapping[str, object] | None) -> str:
    """Return NoCloud meta-data: a fresh instance-id and the host name, updated with `meta`."""
    data: dict[str, object] = {
        "instance-id": f"{name}-{uuid.uuid4().hex[:12]}",
        "local-hostname": name,
    }
    data.update(meta or {})
    return yaml.safe_dump(data, sort_keys=False)


def boot(
    name: str,
    user_data: str,
    meta: Mapping[str, object] | None = None,
    forwards: Sequence[int] = DEFAULT_FORWARDS,
    *,
    golden: Path | None = None,
    ssh_key: Path | None = None,
    ssh_user: str = "root",
    timeout: float = 30,
    expose: Mapping[int, int] | None = None,
) -> SandboxHost:
    """Boot sandbox host `name` from the golden tree with `user_data` as its cloud-init user data.

    Returns once the guest's systemd runs and the forwarders for `forwards`
    listen on this machine's 127.0.0.1; call wait_for_ssh() and
    wait_for_cloud_init() next. `meta` adds NoCloud meta-data keys (e.g.
    "public-keys", as Hetzner passes the project's SSH keys). `ssh_key` is
    the private key whose public half the user data authorizes. `expose`
    maps guest ports to ports on this machine's 127.0.0.1 (stand-in servers);
    those forwarders exist before the guest starts, so cloud-init finds them.
    """
    require_root()
    require_tools()
    paths.check_name(name)
    if golden is None:
        from .golden import ensure_golden

        golden = ensure_golden()
    if not (golden / "sbin/init").exists() and not (golden / "usr/sbin/init").exists():
        raise SandboxError(f"golden tree {golden} has no init; rebuild it with ensure_golden()")

    instance = paths.instance_dir(name)
    if instance.exists():
        existing = _load(instance / STATE_FILE)
        status = existing.status if existing else "unknown"
        raise SandboxError(
            f"sandbox host {name} already exists ({status}); remove it with `inv sandbox.down {name}`"
        )
    instance.mkdir(parents=True, mode=0o700)
    runtime = paths.runtime_dir(name)
    state = HostState(
        name=name,
        machine=paths.machine_name(name),
        netns=paths.machine_name(name),
        golden=str(golden),
        instance_dir=str(instance),
        root=str(instance / "root"),
        upper=str(instance / "upper"),
        work=str(instance / "work"),
        containers_dir=str(instance / "containers"),
        runtime_dir=str(runtime),
        host_netns_handle=str(runtime / "host-netns"),
        console_log=str(instance / "console.log"),
        cgroups=[str(path / name) for path in _cgroup_parents()],
        ssh_user=ssh_user,
        ssh_key=str(ssh_key) if ssh_key else None,
    )
    state.save()
    host = SandboxHost(state)
    try:
        _start(host, user_data, meta, forwards, timeout, expose or {})
    except BaseException as exc:
        console = tail(host.console_log(40), 8)
        state.status = FAILED
        state.save()
        try:
            host.stop(timeout=10)
        except SandboxError as cleanup_error:
            log.error("%s: cleanup after failed boot failed: %s", name, cleanup_error)
        if isinstance(exc, SandboxError):
            message = str(exc)
            if console and "console:" not in message:
                message += f"; console: {console}"
            raise SandboxError(
                f"{message}; the instance directory {instance} is kept for inspection, "
                f"`inv sandbox.down {name}` removes it"
            ) from exc
        raise
    return host


def _start(
    host: SandboxHost,
    user_data: str,
    meta: Mapping[str, object] | None,
    forwards: Sequence[int],
    timeout: float,
    expose: Mapping[int, int],
) -> None:
    state = host.state
    # The upper directory's mode becomes the mode of the guest's "/": 0755, or
    # services running as other users (dbus-daemon as messagebus) cannot
    # resolve any path. The instance directory above stays 0700.
    for directory in (state.root, state.upper):
        Path(directory).mkdir()
        Path(directory).chmod(0o755)
    for directory in (state.work, state.containers_dir):
        Path(directory).mkdir(mode=0o700)
    run_step(
        f"{state.name}: mount overlay",
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={state.golden},upperdir={state.upper},workdir={state.work}",
            state.root,
        ],
    )
    _write_seed(Path(state.root), user_data, meta_data(state.name, meta))

    create_netns(state.netns)
    save_netns_handle(os.getpid(), Path(state.host_netns_handle))
    for guest_port, host_port in expose.items():
        host.expose_host_port(host_port, guest_port)
    cgroups = create_cgroups(f"{paths.CGROUP_PARENT}/{state.name}")
    state.cgroups = [str(path) for path in cgroups]
    state.save()

    argv = launcher_argv(
        cgroups,
        nspawn_argv(
            state.machine, Path(state.root), netns_path(state.netns), Path(state.containers_dir)
        ),
        reboots=REBOOT_LIMIT,
    )
    log.info("%s: booting", state.name)
    with runtime_lock():
        ensure_nspawn_runtime_dir()
        with open(state.console_log, "ab") as console:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                start_new_session=True,
                env={**os.environ, **NSPAWN_ENV},
            )
        host._launcher_process = process
        state.launcher = ProcessId.of(process.pid).to_json()
        state.booted_at = time.time()
        state.save()
        host.leader(timeout=timeout)

    for guest_port in forwards:
        host.add_forward(guest_port)
    state.status = RUNNING
    state.save()
    log.info("%s: running, ports %s", state.name, host.ports)


def _write_seed(root: Path, user_data: str, meta: str) -> None:
    seed = root / SEED_DIR
    seed.mkdir(parents=True, exist_ok=True, mode=0o700)
    # User data may carry secrets (console mode): readable by root only.
    for filename, content in (("user-data", user_data), ("meta-data", meta)):
        descriptor = os.open(seed / filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "w") as handle:
            handle.write(content)


def _load(path: Path) -> HostState | None:
    try:
        return HostState.load(path)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def list_hosts() -> list[SandboxHost]:
    """Return every sandbox host recorded on this machine, running or not, by name."""
    hosts = []
    directory = paths.hosts_dir()
    if directory.is_dir():
        for instance in sorted(directory.iterdir()):
            state = _load(instance / STATE_FILE)
            if state is not None:
                hosts.append(SandboxHost(state))
    return hosts


def get_host(name: str) -> SandboxHost:
    """Return the recorded sandbox host `name`; raise SandboxError when there is none."""
    state = _load(paths.instance_dir(name) / STATE_FILE)
    if state is None:
        raise SandboxError(f"no sandbox host named {name}; `inv sandbox.list` shows them")
    return SandboxHost(state)


def down(name: str, timeout: float = 30) -> None:
    """Stop sandbox host `name` and delete it."""
    get_host(name).destroy(timeout)


def new_name(prefix: str = "sbx") -> str:
    """Return a host name that is not in use yet."""
    return f"{prefix}-{secrets.token_hex(3)}"
