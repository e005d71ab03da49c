"""Measure `inv diagnose`: wall time and SSH round trips, next to one command per check.

Run as root from the project directory:

    .venv/bin/python bench/diagnose_roundtrips.py --hosts 1,4,8 --runs 3

It deploys the registry (ops.deploy, provider "local") onto as many sandbox
hosts (Debian 12 in systemd-nspawn, see ops/sandbox/) as the largest host
count. Stand-ins replace the zot image, Caddy's releases, Object Storage and
Debian's mirror. `--plain` boots bare hosts instead, which is faster and
leaves the probe less to find. The hosts are then listed as the
servers of one deployment, and for each count N, over the first N hosts
in parallel, it runs:

- diagnose: ops.diagnose.run.diagnose(), the code behind `inv diagnose`
  (connect, one probe per host, local DNS and HTTPS facts, all checks);
- naive: the same facts gathered with one remote command per fact, each
  over its own SSH channel (Fabric's Connection.run), as a diagnose that
  runs one command per check would do.

Round trips are counted in this process on paramiko's transport: SSH
connections (Transport.start_client), channel opens
(Transport.open_channel) and exec requests (Channel.exec_command), per
host. Times are wall-clock seconds of the whole run, connections included.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paramiko

from ops import layout
from ops.diagnose import remote, run
from ops.remote.connect import Target

DOMAIN = "registry.sandbox.test"


# --- counting --------------------------------------------------------------------------


class RoundTrips:
    """Counts channel opens and exec requests per SSH server port, by patching paramiko."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.channels: Counter[int] = Counter()
        self.execs: Counter[int] = Counter()
        self.connections: Counter[int] = Counter()

    def install(self) -> None:
        open_channel = paramiko.Transport.open_channel
        exec_command = paramiko.Channel.exec_command
        start_client = paramiko.Transport.start_client
        counter = self

        def counted_open_channel(transport, kind, *args, **kwargs):
            with counter.lock:
                counter.channels[transport.getpeername()[1]] += 1
            return open_channel(transport, kind, *args, **kwargs)

        def counted_exec_command(channel, command):
            with counter.lock:
                counter.execs[channel.get_transport().getpeername()[1]] += 1
            return exec_command(channel, command)

        def counted_start_client(transport, *args, **kwargs):
            with counter.lock:
                counter.connections[transport.getpeername()[1]] += 1
            return start_client(transport, *args, **kwargs)

        paramiko.Transport.open_channel = counted_open_channel
        paramiko.Channel.exec_command = counted_exec_command
        paramiko.Transport.start_client = counted_start_client

    def reset(self) -> None:
        with self.lock:
            self.channels.clear()
            self.execs.clear()
            self.connections.clear()

    def per_host(self) -> dict[str, float]:
        hosts = max(1, len(self.connections))
        return {
            "connections": sum(self.connections.values()) / hosts,
            "channels": sum(self.channels.values()) / hosts,
            "execs": sum(self.execs.values()) / hosts,
        }


# --- the naive variant -----------------------------------------------------------------


def naive_commands(domain: str) -> list[str]:
    """Return one remote command per fact the probe collects, in the probe's order."""
    units = [
        layout.ZOT_UNIT,
        layout.CADDY_UNIT,
        layout.AUTOUPDATE_TIMER,
        layout.AUTOUPDATE_SERVICE,
    ]
    properties = "Id,LoadState,ActiveState,SubState,UnitFileState,Result,NRestarts,ExecMainStatus"
    commands = [f"systemctl show -p {properties} {unit}" for unit in units]
    commands += [
        "systemctl is-system-running",
        "systemd-detect-virt --container",
        "systemctl list-units --state=failed --plain --no-legend",
        f"podman container inspect {layout.ZOT_CONTAINER}",
        "podman auto-update --dry-run --format json",
        f"podman exec {layout.ZOT_CONTAINER} /usr/bin/zot verify {layout.ZOT_CONFIG}",
        f"cat {layout.ZOT_CONFIG}",
        f"stat -c '%a %u' {layout.ZOT_HTPASSWD} && cut -c1-8 {layout.ZOT_HTPASSWD} | sort | uniq -c",
        f"curl -s -o /dev/null -w '%{{http_code}}' http://{layout.ZOT_ADDRESS}:{layout.ZOT_PORT}/v2/",
        f"stat -c '%a %u' {layout.ZOT_CREDENTIALS} && cut -d= -f1 {layout.ZOT_CREDENTIALS}",
        "curl -s -o /dev/null -w '%{http_code}' --max-time 10 https://fsn1.your-objectstorage.com/",
        f"{layout.CADDY_BINARY} version",
        f"{layout.CADDY_BINARY} validate --config {layout.CADDYFILE} --adapter caddyfile",
        f"curl -sk -o /dev/null -w '%{{http_code}}' --resolve {domain}:443:127.0.0.1 "
        f"https://{domain}/v2/",
        f"echo | openssl s_client -connect 127.0.0.1:443 -servername {domain} 2>/dev/null "
        "| openssl x509 -noout -enddate",
        f"curl -s -o /dev/null -w '%{{http_code}}' --resolve {domain}:80:127.0.0.1 "
        f"http://{domain}/v2/",
        "ip -j addr show",
        f"getent ahosts {domain}",
        "ufw status verbose",
        "ss -H -t -l -n",
        "df -B1 --output=target,size,avail / /var/lib/containers /var/log",
        "cat /proc/meminfo /proc/vmstat",
        "timedatectl show",
        f"journalctl --no-pager -u {layout.ZOT_UNIT} --since -24h -o json -n 20000",
        f"tail -c 4194304 {layout.ZOT_LOG}",
        f"journalctl --no-pager -u {layout.CADDY_UNIT} --since -24h -o json -n 20000",
        f"tail -c 4194304 {layout.CADDY_ACCESS_LOG}",
        "cloud-init status --long",
        "cat /run/cloud-init/result.json",
        f"cat {layout.BOOTSTRAP_DONE_MARKER}",
        f"cat {layout.LOCK_DIR}/owner",
        "cat /run/reboot-required",
    ]
    return commands


def naive_diagnose(
    targets: Sequence[Target], connect: Callable[[Target], Any], commands: list[str]
) -> None:
    def one(target: Target) -> None:
        conn = connect(target)
        try:
            for command in commands:
                conn.run(command, hide=True, warn=True, in_stream=False, timeout=60)
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        for future in [pool.submit(one, target) for target in targets]:
            future.result()


# --- hosts -----------------------------------------------------------------------------


def boot_hosts(count: int, folder: Path) -> tuple[list[Any], Path]:
    from ops.sandbox import boot, ensure_golden, generate_keypair, new_name, public_key_of
    from ops.sandbox.keys import minimal_user_data

    golden = ensure_golden(log=lambda line: print(f"golden: {line}", file=sys.stderr))
    key = generate_keypair(folder / "id_ed25519")
    hosts = []
    try:
        for _ in range(count):
            hosts.append(
                boot(
                    new_name("dgbench"),
                    minimal_user_data(public_key_of(key)),
                    golden=golden,
                    ssh_key=key,
                )
            )
        for host in hosts:
            host.wait_for_ssh(120)
            host.wait_for_cloud_init(300)
    except BaseException:
        for host in hosts:
            host.destroy()
        raise
    return hosts, key


def deploy_hosts(count: int, folder: Path) -> tuple[Any, list[dict[str, Any]], Any]:
    """Deploy COUNT registries on sandbox hosts; return the stand-ins, server records, settings.

    The settings describe one deployment ("bench") whose servers.json lists
    every host, so one diagnose run covers them all.
    """
    import io
    import os

    from ops import state
    from ops.config import parse_settings
    from ops.deploy import deploy
    from ops.progress import Progress
    from ops.sandbox import ensure_golden, generate_keypair
    from ops.sandbox.standins.stack import StandinStack
    from ops.secrets import SecretSource

    ensure_golden(log=lambda line: print(f"golden: {line}", file=sys.stderr))
    os.environ[state.STATE_ROOT_VARIABLE] = str(folder / "state")
    key = generate_keypair(folder / "id_ed25519")
    stack = StandinStack(folder / "standins").start()
    secrets = {name: value.reveal() for name, value in stack.secret_environment().items()}

    def settings(name: str) -> Any:
        raw: dict[str, Any] = {
            "name": name,
            "domain": DOMAIN,
            "acme_email": "ops@example.com",
            "ssh": {"public_key": f"{key}.pub", "private_key": str(key)},
        }
        for section, values in stack.settings_tree().items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
        return parse_settings(raw)

    records = []
    try:
        for number in range(count):
            single = settings(f"bench{number}")
            started = time.monotonic()
            deploy(
                single,
                provider="local",
                source=SecretSource(environ=secrets, file_values={}),
                progress=Progress(io.StringIO()),
                local_options={"expose": stack.expose_map()},
            )
            records.extend(state.read_servers(single.name))
            print(f"deployed {single.name} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    except BaseException:
        destroy_deployments(count)
        stack.stop()
        raise
    combined = settings("bench")
    state.write_servers(combined.name, records)
    return stack, records, combined


def destroy_deployments(count: int) -> None:
    from ops.sandbox import down, list_hosts

    names = {host.name for host in list_hosts()}
    for number in range(count):
        name = f"zh-bench{number}"
        if name in names:
            down(name)


def settings_for(domain: str) -> Any:
    """Return the fields diagnose reads from Settings, so bare hosts need no configuration."""
    return SimpleNamespace(
        name="diagnose-bench",
        domain=domain,
        tls="internal",
        acme_staging=False,
        storage=SimpleNamespace(bucket="zot-bench", endpoint="https://fsn1.your-objectstorage.com"),
    )


def measure(label: str, action: Callable[[], Any], counter: RoundTrips) -> dict[str, float]:
    counter.reset()
    started = time.monotonic()
    action()
    seconds = time.monotonic() - started
    return {"variant": label, "seconds": seconds, **counter.per_host()}


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    cpus = sum(1 for line in cpuinfo if line.startswith("processor"))
    return (
        f"{model} x {cpus}, kernel {platform.release()}, Python {platform.python_version()}, "
        f"paramiko {metadata.version('paramiko')}, fabric {metadata.version('fabric')}"
    )


def measure_counts(
    counts: list[int],
    runs: int,
    settings: Any,
    targets_all: list[Target],
    connect: Callable[[Target], Any],
    counter: RoundTrips,
) -> list[dict[str, Any]]:
    commands = naive_commands(DOMAIN)
    env = run.Environment(connect=connect, max_parallel=max(counts))
    # One warm-up run over every host, so first-use costs (python3 byte-compiling
    # the probe's imports, podman's first start) do not land in the first count.
    run.diagnose(settings, targets_all, env)
    rows: list[dict[str, Any]] = []
    for count in counts:
        targets = targets_all[:count]
        for _ in range(runs):
            reports: list[Any] = []
            rows.append(
                {
                    "hosts": count,
                    **measure(
                        "diagnose",
                        lambda targets=targets, reports=reports: reports.extend(
                            run.diagnose(settings, targets, env)
                        ),
                        counter,
                    ),
                    "timings": [report.facts["timings_ms"] for report in reports if report.facts],
                    "probe_seconds": [
                        report.facts["finished_at"] - report.facts["started_at"]
                        for report in reports
                        if report.facts
                    ],
                }
            )
            rows.append(
                {
                    "hosts": count,
                    **measure(
                        "naive",
                        lambda targets=targets: naive_diagnose(targets, connect, commands),
                        counter,
                    ),
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]], counts: list[int], runs: int, hosts: str) -> None:
    print(f"# diagnose round trips, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# machine: {machine()}")
    print(f"# hosts: {hosts}")
    print(
        f"# probe: {len(remote.probe_source())} bytes sent on stdin; "
        f"naive: {len(naive_commands(DOMAIN))} commands"
    )
    print(f"# {runs} runs per row; seconds: median (min-max); round trips per host")
    print("| hosts | variant | seconds | connections | channel opens | exec requests |")
    print("| --- | --- | --- | --- | --- | --- |")
    for count in counts:
        for variant in ("diagnose", "naive"):
            selected = [r for r in rows if r["hosts"] == count and r["variant"] == variant]
            seconds = [r["seconds"] for r in selected]
            first = selected[0]
            print(
                f"| {count} | {variant} | {statistics.median(seconds):.2f} "
                f"({min(seconds):.2f}-{max(seconds):.2f}) | {first['connections']:.0f} | "
                f"{first['channels']:.0f} | {first['execs']:.0f} |"
            )


def print_probe_timings(rows: list[dict[str, Any]]) -> None:
    """Print the probe's own run time and slowest sections, median over the one-host runs."""
    alone = [row for row in rows if row["hosts"] == 1 and "timings" in row]
    timings = [t for row in alone for t in row["timings"]]
    if not timings:
        return
    wall = statistics.median(seconds for row in alone for seconds in row["probe_seconds"])
    medians = {name: statistics.median(t.get(name, 0) for t in timings) for name in timings[0]}
    slowest = sorted(medians.items(), key=lambda item: -item[1])[:6]
    listed = ", ".join(f"{name} {ms:.0f}" for name, ms in slowest)
    print(
        f"# probe on one host: {wall * 1000:.0f} ms from start to finish (sections run on "
        f"threads); slowest sections, median ms: {listed}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,4,8", help="host counts, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs per count and variant")
    parser.add_argument(
        "--plain", action="store_true", help="boot bare hosts instead of deploying the registry"
    )
    options = parser.parse_args(argv)
    counts = sorted({int(part) for part in options.hosts.split(",")})
    largest = max(counts)

    counter = RoundTrips()
    counter.install()
    with tempfile.TemporaryDirectory(prefix="diagnose-bench-") as scratch:
        if options.plain:
            hosts, _key = boot_hosts(largest, Path(scratch))
            try:
                by_port = {host.ssh_port: host for host in hosts}
                targets = [Target(host.name, "127.0.0.1", host.ssh_port) for host in hosts]
                rows = measure_counts(
                    counts,
                    options.runs,
                    settings_for(DOMAIN),
                    targets,
                    lambda target: by_port[target.port].connection(),
                    counter,
                )
            finally:
                for host in hosts:
                    host.destroy()
            description = (
                "bare sandbox hosts (Debian 12 in systemd-nspawn, sshd behind a loopback "
                "forwarder), nothing deployed on them"
            )
        else:
            from ops.remote.connect import connect_for

            stack, records, settings = deploy_hosts(largest, Path(scratch))
            try:
                targets = [
                    Target(record["name"], record["ssh_host"], int(record["ssh_port"]))
                    for record in records
                ]
                rows = measure_counts(
                    counts,
                    options.runs,
                    settings,
                    targets,
                    lambda target: connect_for(settings, target),
                    counter,
                )
            finally:
                destroy_deployments(largest)
                stack.stop()
            description = (
                "sandbox hosts (Debian 12 in systemd-nspawn, sshd behind a loopback forwarder), "
                "each with the registry deployed by ops.deploy: zot stand-in under podman, "
                "Caddy, ufw, S3 stand-in"
            )
    print_table(rows, counts, options.runs, description)
    print_probe_timings(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
