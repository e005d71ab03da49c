"""Measure the toolkit's own time during `deploy`: wall time not spent waiting on the API or the host.

Run as root from the project directory:

    .venv/bin/python bench/deploy_overhead.py --runs 3

The Hetzner Cloud API is the local fake (tests/fakes/hcloud_api.py), whose
server create boots a sandbox host; the offline stand-ins serve apt, Caddy,
the zot image and S3. The first deploy creates the server, the next ones
find it and change nothing. Every blocking call of the deploying thread is
timed by category: API requests (the server create includes booting the
host), SSH connects, remote commands, SFTP replies, HTTPS probes and the
sleeps between polls. The toolkit's own time is what remains of the wall
time; its CPU time is the deploying thread's own (time.thread_time).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fabric  # noqa: E402
import hcloud._client  # noqa: E402
import paramiko.sftp_client  # noqa: E402

import ops.converge  # noqa: E402
from ops.config import parse_settings  # noqa: E402
from ops.converge import Timeouts  # noqa: E402
from ops.deploy import deploy, destroy  # noqa: E402
from ops.hetzner import make_client  # noqa: E402
from ops.progress import Progress  # noqa: E402
from ops.sandbox import boot, ensure_golden, get_host  # noqa: E402
from ops.sandbox.standins.stack import StandinStack  # noqa: E402
from ops.secrets import Secret, SecretSource  # noqa: E402
from tests.conftest import write_ssh_keypair  # noqa: E402
from tests.fakes.hcloud_api import FakeHetznerCloud, ServerAddresses  # noqa: E402

CATEGORIES = ("api", "ssh-connect", "remote-command", "sftp", "https-probe", "poll-sleep")


class Meter:
    """Seconds the measured thread spent blocked, by category."""

    def __init__(self) -> None:
        self.thread = threading.main_thread()
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._depth = 0

    def wrap(self, category: str, function: Callable) -> Callable:
        meter = self

        def timed(*args, **kwargs):
            # Count only the deploying thread, and only the outermost blocking call.
            if threading.current_thread() is not meter.thread or meter._depth:
                return function(*args, **kwargs)
            meter._depth += 1
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                meter.seconds[category] += time.perf_counter() - started
                meter.counts[category] += 1
                meter._depth -= 1

        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.counts.clear()


@contextlib.contextmanager
def instrumented(meter: Meter) -> Iterator[None]:
    patches = [
        (hcloud._client.ClientBase, "request", "api"),
        (fabric.Connection, "open", "ssh-connect"),
        (fabric.Connection, "run", "remote-command"),
        (paramiko.sftp_client.SFTPClient, "_read_response", "sftp"),
        (ops.converge, "https_status", "https-probe"),
        (time, "sleep", "poll-sleep"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, category in patches:
        setattr(owner, name, meter.wrap(category, getattr(owner, name)))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def run_once(meter: Meter, settings, source, client, endpoint) -> dict[str, float]:
    meter.reset()
    cpu_start = time.thread_time()
    started = time.perf_counter()
    outcome = deploy(
        settings,
        source=source,
        client=client,
        endpoint_map=endpoint,
        progress=Progress(io.StringIO()),
        timeouts=Timeouts(ssh=180, cloud_init=900, zot=120, https=120),
    )
    wall = time.perf_counter() - started
    cpu = time.thread_time() - cpu_start
    waited = sum(meter.seconds.values())
    row = {"wall": wall, "own": wall - waited, "own-cpu": cpu, "created": outcome.record.created}
    row.update({category: meter.seconds.get(category, 0.0) for category in CATEGORIES})
    row["round-trips"] = meter.counts.get("remote-command", 0)
    row["api-requests"] = meter.counts.get("api", 0)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="deploys after the first (default 3)")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: sandbox hosts need mounts and network namespaces", file=sys.stderr)
        return 2

    ensure_golden(log=lambda line: None)
    work = Path(tempfile.mkdtemp(prefix="zh-bench-"))
    os.environ["ZOT_HETZNER_STATE_DIR"] = str(work / "state")
    meter = Meter()
    with StandinStack(work / "standins") as stack:
        key = write_ssh_keypair(work)
        raw = {
            "name": "bench",
            "domain": "registry.test",
            "acme_email": "ops@example.com",
            "ssh": {"public_key": str(key)},
        }
        for section, values in stack.settings_tree().items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
        settings = parse_settings(raw)
        hosts: dict[str, str] = {}

        def on_create(request) -> ServerAddresses:
            name = f"bench-{request.server_id}"
            boot(
                name,
                request.user_data or "",
                forwards=(22, 80, 443),
                ssh_key=key.with_suffix(""),
                expose=stack.expose_map(),
            )
            address = f"203.0.113.{request.server_id % 250 + 1}"
            hosts[address] = name
            return ServerAddresses(ipv4=address)

        def on_delete(server_id: int, name: str) -> None:
            get_host(f"bench-{server_id}").destroy()

        def endpoint(address: str, port: int) -> tuple[str, int]:
            host = get_host(hosts[address])
            return "127.0.0.1", host.port(port if port in (80, 443) else 22)

        with FakeHetznerCloud(action_polls=1) as fake:
            fake.on_server_create(on_create)
            fake.on_server_delete(on_delete)
            client = make_client(Secret(fake.token), endpoint=fake.endpoint, poll_interval=0.5)
            secrets = {k: v.reveal() for k, v in stack.secret_environment().items()}
            source = SecretSource(environ={**secrets, "HCLOUD_TOKEN": fake.token}, file_values={})
            rows = []
            try:
                with instrumented(meter):
                    for _ in range(arguments.runs + 1):
                        rows.append(run_once(meter, settings, source, client, endpoint))
            finally:
                destroy(settings, source=source, client=client, remove_firewall=True)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"kernel {platform.release()}, Python {platform.python_version()}"
    )
    print("command: .venv/bin/python bench/deploy_overhead.py " + " ".join(sys.argv[1:]))
    header = ["run", "wall", "own", "own-cpu", *CATEGORIES, "round-trips", "api-requests"]
    print(" | ".join(header))
    for number, row in enumerate(rows):
        label = "create" if row["created"] else f"again {number}"
        cells = [label] + [f"{row[name]:.2f}" for name in header[1:-2]]
        cells += [str(row["round-trips"]), str(row["api-requests"])]
        print(" | ".join(cells))
    again = [row for row in rows if not row["created"]]
    if again:
        print(
            f"no-change deploy: own time median {statistics.median(r['own'] for r in again):.2f} s "
            f"of {statistics.median(r['wall'] for r in again):.2f} s wall"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
