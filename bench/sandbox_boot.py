"""Measure how fast a local sandbox host boots: to an SSH key login and to cloud-init done.

Run as root from the project directory:

    .venv/bin/python bench/sandbox_boot.py --runs 5

Each run boots a fresh host from the cached golden tree with user data that
authorizes a key and has one write_files and one runcmd entry, then
destroys it. Times are wall-clock seconds from the boot() call, except
destroy (stop and delete), which is timed on its own.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from ops.sandbox import boot, ensure_golden, generate_keypair, new_name, public_key_of
from ops.sandbox.system import CGROUP_HIERARCHIES

USER_DATA = {
    "write_files": [{"path": "/etc/bench.conf", "content": "bench\n"}],
    "runcmd": [["touch", "/root/bench-runcmd"]],
}


def machine_facts() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    cpus = sum(1 for line in cpuinfo.splitlines() if line.startswith("processor"))
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    nspawn = subprocess.run(
        ["systemd-nspawn", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    hybrid = all((hierarchy / "cgroup.procs").exists() for hierarchy in CGROUP_HIERARCHIES)
    return {
        "cpu": f"{model} x {cpus}",
        "memory": f"{memory_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "debian": Path("/etc/debian_version").read_text().strip(),
        "systemd-nspawn": nspawn[0] if nspawn else "missing",
        "cgroups": "hybrid (v1 + unified)" if hybrid else "other",
        "python": platform.python_version(),
    }


def one_run(golden: Path, key: Path) -> dict[str, float]:
    user_data = "#cloud-config\n" + yaml.safe_dump(
        {"ssh_authorized_keys": [public_key_of(key)], **USER_DATA}
    )
    started = time.monotonic()
    host = boot(new_name("bench"), user_data, golden=golden, ssh_key=key)
    try:
        booted = time.monotonic() - started
        host.wait_for_ssh(120)
        ssh = time.monotonic() - started
        status = host.wait_for_cloud_init(300)
        cloud_init = time.monotonic() - started
        if not status.done:
            raise SystemExit(f"cloud-init ended {status.status}: {status.errors}")
    finally:
        stop_started = time.monotonic()
        host.destroy()
        destroy = time.monotonic() - stop_started
    return {
        "systemd up": booted,
        "ssh login": ssh,
        "cloud-init done": cloud_init,
        "destroy": destroy,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="number of boots (default: 5)")
    args = parser.parse_args()

    print(f"# sandbox boot benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    for name, value in machine_facts().items():
        print(f"# {name}: {value}")

    golden_started = time.monotonic()
    golden = ensure_golden(log=lambda line: print(f"# {line}"))
    print(f"# golden tree: {golden.name} (ready in {time.monotonic() - golden_started:.1f} s)")

    with tempfile.TemporaryDirectory() as directory:
        key = generate_keypair(Path(directory) / "id_ed25519")
        results = []
        for index in range(args.runs):
            result = one_run(golden, key)
            results.append(result)
            print(f"run {index + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.items()))

    print("\nseconds (destroy alone is timed from its own start) | min | median | max")
    for measure in results[0]:
        values = [result[measure] for result in results]
        print(
            f"{measure} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
