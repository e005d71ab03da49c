"""Invoke tasks for local sandbox hosts: `inv sandbox.up`, `.down`, `.down-all`, `.list`, `.ssh`.

tasks.py adds the `sandbox` collection defined here to the project's tasks.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from . import paths
from .golden import ensure_golden
from .host import DEFAULT_FORWARDS, boot, get_host, list_hosts, new_name
from .keys import generate_keypair, minimal_user_data, public_key_of
from .system import SandboxError


def _default_key() -> Path:
    return paths.sandbox_root() / "ssh" / "id_ed25519"


def _fail(error: Exception) -> Exit:
    return Exit(f"error: {error}", code=1)


@task(
    help={
        "name": "host name (default: sbx-<random hex>)",
        "user-data": "cloud-init user data file (default: one that authorizes a generated key)",
        "ssh-key": "private key that the user data authorizes, used by sandbox.ssh",
        "port": "guest port to forward to 127.0.0.1 besides 22, 80 and 443; repeatable",
        "timeout": "seconds to wait for ssh and for cloud-init, each (default: 300)",
    },
    iterable=["port"],
)
def up(c, name=None, user_data=None, ssh_key=None, port=None, timeout=300):
    """Boot a local Debian 12 sandbox host and wait until cloud-init is done."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("ops").setLevel(logging.INFO)
    name = name or new_name()
    try:
        if user_data:
            text = Path(user_data).read_text()
            key = Path(ssh_key) if ssh_key else None
        else:
            key = Path(ssh_key) if ssh_key else generate_keypair(_default_key())
            text = minimal_user_data(public_key_of(key))
        golden = ensure_golden()
        forwards = [*DEFAULT_FORWARDS, *(int(item) for item in port or [])]
        host = boot(name, text, forwards=forwards, golden=golden, ssh_key=key)
        print(f"{name}: ssh up after {host.wait_for_ssh(float(timeout)):.1f} s")
        status = host.wait_for_cloud_init(float(timeout))
    except (OSError, SandboxError) as error:
        raise _fail(error) from None
    ports = ", ".join(f"guest {guest} -> 127.0.0.1:{local}" for guest, local in host.ports.items())
    print(f"{name}: cloud-init {status.status} after {status.seconds:.1f} s more")
    print(f"{name}: {ports}")
    print(f"log in: inv sandbox.ssh {name}    remove: inv sandbox.down {name}")
    if not status.done:
        raise Exit(
            f"error: cloud-init on {name} ended {status.status}: {'; '.join(status.errors)}; "
            f"see /var/log/cloud-init.log in the host (inv sandbox.ssh {name})",
            code=1,
        )


@task(
    help={
        "name": "host to stop and delete",
        "timeout": "seconds to wait for a clean poweroff before killing the guest (default: 30)",
    }
)
def down(c, name, timeout=30):
    """Stop a sandbox host and delete it: processes, forwarders, mounts, netns, cgroups, files."""
    _remove([name], float(timeout))


@task(
    name="down-all",
    help={
        "timeout": "seconds to wait for each clean poweroff before killing the guest (default: 30)"
    },
)
def down_all(c, timeout=30):
    """Stop and delete every sandbox host on this machine."""
    _remove([host.name for host in list_hosts()], float(timeout))


def _remove(names: list[str], timeout: float) -> None:
    try:
        for name in names:
            get_host(name).destroy(timeout)
            print(f"{name}: removed")
    except SandboxError as error:
        raise _fail(error) from None


@task(name="list")
def list_(c):
    """List the sandbox hosts on this machine with their status and forwarded ports."""
    hosts = list_hosts()
    if not hosts:
        print("no sandbox hosts")
        return
    print(f"{'NAME':<20} {'STATUS':<8} {'SSH':>6} {'HTTP':>6} {'HTTPS':>6}  OTHER PORTS")
    for host in hosts:
        ports = dict(host.ports)
        main = [str(ports.pop(guest, "-")) for guest in (22, 80, 443)]
        other = " ".join(f"{guest}->{local}" for guest, local in ports.items())
        print(f"{host.name:<20} {host.status:<8} {main[0]:>6} {main[1]:>6} {main[2]:>6}  {other}")


@task(
    help={
        "name": "host to log in to",
        "user": "user to log in as (default: the one recorded at boot, root)",
        "command": "run this command instead of an interactive shell",
    }
)
def ssh(c, name, user=None, command=None):
    """Open an ssh session to a sandbox host over its forwarded port, checking its host key."""
    try:
        host = get_host(name)
        known_hosts = host.write_known_hosts()
        argv = [
            "ssh",
            "-p",
            str(host.ssh_port),
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
        ]
        if host.ssh_key:
            argv += ["-i", str(host.ssh_key), "-o", "IdentitiesOnly=yes"]
        argv.append(f"{user or host.state.ssh_user}@127.0.0.1")
        if command:
            argv.append(command)
    except SandboxError as error:
        raise _fail(error) from None
    result = c.run(shlex.join(argv), pty=sys.stdin.isatty(), warn=True)
    if result.exited:
        raise Exit(code=result.exited)


@task(
    help={
        "output": "where to write the settings that point a deployment at the stand-ins "
        "(default: sandbox.yaml); use it with inv -f FILE deploy --provider local",
    }
)
def standins_up(c, output="sandbox.yaml"):
    """Start the offline stand-ins (apt proxy, Caddy releases, zot image, S3) on 127.0.0.1."""
    import yaml

    from .standins.stack import DEFAULT_WORK_DIR, StandinStack

    stack = StandinStack(DEFAULT_WORK_DIR)
    try:
        stack.start()
    except (OSError, SandboxError) as error:
        raise _fail(error) from None
    Path(output).write_text(
        "# Written by inv sandbox.standins-up: a deployment that uses the local stand-ins.\n"
        + yaml.safe_dump({"deployment": stack.settings_tree()}, sort_keys=False)
    )
    for name, server in stack.servers.items():
        print(f"{name}: {server.url} (pid {server.pid})")
    print(f"wrote {output}")
    print("deploy onto a sandbox host with:")
    print(f"  export ZOT_HETZNER_SECRETS_FILE={stack.s3.credentials_file}")
    print(f"  inv -f {output} deploy --provider local")


@task
def standins_down(c):
    """Stop the stand-ins that sandbox.standins-up started."""
    from .standins.stack import DEFAULT_WORK_DIR, StandinStack

    StandinStack(DEFAULT_WORK_DIR).stop()
    print("stand-ins stopped")


sandbox = Collection("sandbox", up, down, down_all, list_, ssh, standins_up, standins_down)
