"""The SSH change framework against a real Debian 12 host (systemd-nspawn sandbox).

One host serves the module. A small systemd unit plays the service:
it serves HTTP on 127.0.0.1:8099 only when its config file says "good", so
a bad config is a service that does not come back after a restart.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.errors import LockHeldError, RemoteError
from ops.remote import change, checks, commands, connect, lock
from ops.remote.change import DesiredFile, RolledBackError, Step
from ops.remote.connect import HostKeyMismatchError, Target
from ops.remote.hosts import HostOutput

pytestmark = pytest.mark.integration

UNIT = "zh-test.service"
CONFIG = "/etc/zh-test/config"
SECRET_FILE = "/etc/zh-test/secret.env"
SECRET = "S3cr3t-value-that-must-never-show-9f8e7d"
UNIT_TEXT = """[Unit]
Description=zot-hetzner test service
[Service]
ExecStart=/bin/sh -c 'read -r state < /etc/zh-test/config; [ "$state" = good ] && cd /srv && exec python3 -m http.server 8099 --bind 127.0.0.1'
Restart=no
"""


@pytest.fixture(scope="module")
def host(module_sandbox_host_factory):
    host = module_sandbox_host_factory()
    host.wait_for_ssh(60)
    status = host.wait_for_cloud_init(180)
    assert status.status == "done", status.long_output
    host.run(["mkdir", "-p", "/etc/zh-test", "/srv"])
    host.run(["sh", "-c", f"printf 'good\\n' > {CONFIG}"])
    host.run(["sh", "-c", f"cat > /etc/systemd/system/{UNIT} <<'EOF'\n{UNIT_TEXT}EOF"])
    host.run(["systemctl", "daemon-reload"])
    host.run(["systemctl", "start", UNIT])
    return host


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    return tmp_path / "state" / "known_hosts"


@pytest.fixture
def conn(host, known_hosts: Path) -> Iterator[connect.PinnedConnection]:
    target = Target(host.name, "127.0.0.1", host.ssh_port)
    connection = connect.connect(
        target, user="root", private_key=host.ssh_key, known_hosts=known_hosts, allow_agent=False
    )
    yield connection
    connection.close()


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "POLL_INTERVAL", 0.5)
    monkeypatch.setattr(change, "RECONNECT_PAUSE", 0.5)


def service_answers(timeout: float = 10) -> Step:
    return Step(
        "test service answers",
        action=lambda c: checks.wait_http(c, "http://127.0.0.1:8099/", {200}, timeout=timeout),
    )


def config_file(state: str) -> DesiredFile:
    return DesiredFile(CONFIG, f"{state}\n", 0o644)


def test_host_key_pinned_on_first_contact(host, conn, known_hosts: Path) -> None:
    assert conn.run("true", hide=True, in_stream=False).exited == 0
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    pinned = known_hosts.read_text().split()
    assert pinned[0] == f"[127.0.0.1]:{host.ssh_port}"
    offered = [line.split() for line in host.host_keys()]
    assert [pinned[1], pinned[2]] in [entry[1:3] for entry in offered]


def test_changed_host_key_rejected(host, known_hosts: Path, tmp_path: Path) -> None:
    from tests.conftest import write_ssh_keypair

    other = write_ssh_keypair(tmp_path, "other").read_text().split()
    known_hosts.parent.mkdir(parents=True)
    known_hosts.write_text(f"[127.0.0.1]:{host.ssh_port} {other[0]} {other[1]}\n")
    target = Target(host.name, "127.0.0.1", host.ssh_port)
    conn = connect.connect(
        target, user="root", private_key=host.ssh_key, known_hosts=known_hosts, allow_agent=False
    )
    with pytest.raises(HostKeyMismatchError, match="ssh-keygen -R"):
        conn.run("true", hide=True, in_stream=False)


def test_change_applied_then_no_change(host, conn, lines: list[str]) -> None:
    host.run(["sh", "-c", f"printf 'good\\n' > {CONFIG}"])
    first = change.apply_change(
        conn,
        task="integration",
        files=[config_file("good"), DesiredFile("/srv/index.html", "hello v1\n", 0o644)],
        steps=[change.restart_step(UNIT)],
        checks=[service_answers()],
        out=lines.append,
    )
    assert first.changed
    assert host.run(["cat", "/srv/index.html"]).stdout == "hello v1\n"
    second = change.apply_change(
        conn,
        task="integration",
        files=[config_file("good"), DesiredFile("/srv/index.html", "hello v1\n", 0o644)],
        steps=[change.restart_step(UNIT)],
        checks=[service_answers()],
        out=lines.append,
    )
    assert not second.changed
    audit = host.run(["tail", "-n", "1", "/var/log/zot-hetzner/audit.log"]).stdout
    assert json.loads(audit)["task"] == "integration"


def test_dry_run_changes_nothing(host, conn, lines: list[str]) -> None:
    before = host.run(["sha256sum", CONFIG]).stdout
    listing = host.run(
        ["sh", "-c", "ls -la /etc/zh-test /var/lib/zot-hetzner 2>&1"], check=False
    ).stdout
    result = change.apply_change(
        conn,
        task="integration",
        files=[config_file("other")],
        steps=[change.restart_step(UNIT)],
        dry_run=True,
        out=lines.append,
    )
    assert result.changed
    assert result.dry_run
    assert host.run(["sha256sum", CONFIG]).stdout == before
    after = host.run(["sh", "-c", "ls -la /etc/zh-test /var/lib/zot-hetzner 2>&1"], check=False)
    assert after.stdout == listing
    assert "-good" in "\n".join(lines)


def test_bad_config_rolled_back(host, conn, lines: list[str]) -> None:
    host.run(["sh", "-c", f"printf 'good\\n' > {CONFIG}"])
    host.run(["systemctl", "restart", UNIT])
    with pytest.raises(RolledBackError) as raised:
        change.apply_change(
            conn,
            task="integration",
            files=[config_file("bad")],
            steps=[change.restart_step(UNIT)],
            checks=[service_answers(timeout=5)],
            out=lines.append,
        )
    assert "back at its previous state" in str(raised.value)
    assert host.run(["cat", CONFIG]).stdout == "good\n"
    assert host.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
    assert host.run(["test", "!", "-e", "/var/lib/zot-hetzner/lock"], check=False).returncode == 0


def test_validator_failure_changes_nothing(host, conn, lines: list[str]) -> None:
    host.run(["sh", "-c", "printf ':8088 {\\n\\trespond ok\\n}\\n' > /etc/zh-test/Caddyfile"])
    bad = DesiredFile(
        "/etc/zh-test/Caddyfile",
        ":8088 {\n\tno_such_directive\n}\n",
        0o644,
        validator=lambda temp: commands.caddy_validate("/usr/bin/caddy", temp),
    )
    with pytest.raises(RemoteError, match="nothing was changed"):
        change.apply_change(conn, task="integration", files=[bad], out=lines.append)
    assert "respond ok" in host.run(["cat", "/etc/zh-test/Caddyfile"]).stdout
    leftovers = host.run(["sh", "-c", "ls -a /etc/zh-test"]).stdout
    assert ".tmp" not in leftovers


def test_secret_file_mode_and_process_list(host, conn, lines: list[str]) -> None:
    observer = "for i in $(seq 300); do ps -eo args >> /run/zh-ps.log; sleep 0.02; done"
    host.run(["rm", "-f", "/run/zh-ps.log"])
    watching = threading.Thread(target=lambda: host.run(["sh", "-c", observer], timeout=60))
    watching.start()
    time.sleep(0.3)  # let the observer take its first snapshots before the change starts
    host.run(["sh", "-c", f"umask 077; printf 'TOKEN=previous\\n' > {SECRET_FILE}"])
    change.apply_change(
        conn,
        task="integration",
        files=[DesiredFile(SECRET_FILE, f"TOKEN={SECRET}\n", 0o600, secret=True)],
        checks=[
            Step(
                "curl with a password on stdin",
                action=lambda c: checks.wait_http(
                    c,
                    "http://127.0.0.1:8099/",
                    {200},
                    credentials=("user", change_secret()),
                    timeout=5,
                ),
            )
        ],
        out=lines.append,
    )
    watching.join(60)
    stat = host.run(["stat", "-c", "%a %U", SECRET_FILE]).stdout.split()
    assert stat == ["600", "root"]
    snapshots = host.run(["cat", "/run/zh-ps.log"]).stdout
    assert "ps -eo args" in snapshots, "the observer recorded nothing"
    assert SECRET not in snapshots
    assert "  (secret content changed)" in lines
    assert SECRET not in "\n".join(lines)
    audit = host.run(["cat", "/var/log/zot-hetzner/audit.log"]).stdout
    assert SECRET not in audit
    backups = host.run(
        [
            "sh",
            "-c",
            "find /var/lib/zot-hetzner/backups -type f -name '*secret*' -exec stat -c %a {} +",
        ]
    )
    assert backups.stdout.split(), "no backup of the secret file was made"
    assert set(backups.stdout.split()) == {"600"}


def change_secret():
    from ops.secrets import Secret

    return Secret(SECRET)


def test_lock_held_and_broken(host, conn, lines: list[str]) -> None:
    holder = lock.LockOwner("alice@laptop", 4242, "upgrade-caddy", "2025-01-06T10:00:00Z", "t")
    host.run(["mkdir", "-p", "-m", "0700", "/var/lib/zot-hetzner/lock"])
    host.run(["sh", "-c", "cat > /var/lib/zot-hetzner/lock/owner"], input_text=holder.to_json())
    with pytest.raises(LockHeldError, match="alice@laptop"):
        lock.acquire(conn, "integration")
    with lock.change_lock(conn, "integration", break_lock=True, out=lines.append):
        owner = json.loads(host.run(["cat", "/var/lib/zot-hetzner/lock/owner"]).stdout)
        assert owner["task"] == "integration"
    assert host.run(["test", "-e", "/var/lib/zot-hetzner/lock"], check=False).returncode == 1


def test_two_operators_one_lock(host, known_hosts: Path) -> None:
    target = Target(host.name, "127.0.0.1", host.ssh_port)
    results: list[str] = []

    def take() -> None:
        connection = connect.connect(
            target,
            user="root",
            private_key=host.ssh_key,
            known_hosts=known_hosts,
            allow_agent=False,
        )
        try:
            with lock.change_lock(connection, "race", out=lambda _line: None):
                results.append("held")
                time.sleep(2)
        except LockHeldError:
            results.append("rejected")
        finally:
            connection.close()

    threads = [threading.Thread(target=take) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == ["held", "rejected"]


SLOW_ONCE = "if [ ! -e /run/zh-slow-done ]; then touch /run/zh-slow-done; sleep 47; fi"


def test_dropped_session_rolled_back(host, conn, lines: list[str]) -> None:
    host.run(["sh", "-c", f"printf 'good\\n' > {CONFIG}"])
    host.run(["rm", "-f", "/run/zh-slow-done"])
    killed: list[str] = []

    def kill_session() -> None:
        # Wait for the slow step, then kill the sshd process serving this session.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = host.run(["sh", "-c", "pgrep -f '^sleep 47$' || true"]).stdout.split()
            if found:
                sessions = host.run(
                    ["sh", "-c", "pgrep -f '^sshd: root@notty' || true"]
                ).stdout.split()
                for pid in sessions:
                    host.run(["kill", pid], check=False)
                    killed.append(pid)
                return
            time.sleep(0.2)

    conn.run("true", hide=True, in_stream=False)
    first_transport = conn.transport
    killer = threading.Thread(target=kill_session)
    killer.start()
    started = time.monotonic()
    with pytest.raises(RolledBackError) as raised:
        change.apply_change(
            conn,
            task="integration",
            files=[config_file("good"), DesiredFile("/srv/index.html", "hello v2\n", 0o644)],
            # Slow the first time only: the rollback runs the step again.
            steps=[Step("slow step", command=SLOW_ONCE)],
            out=lines.append,
        )
    killer.join(60)
    assert killed, "no SSH session was found to kill"
    assert time.monotonic() - started < 40, (
        "the broken session was not noticed before the step ended"
    )
    message = str(raised.value)
    assert "SSH connection" in message
    assert "back at its previous state" in message
    assert conn.transport is not first_transport, "the rollback did not reconnect"
    assert host.run(["cat", "/srv/index.html"]).stdout == "hello v1\n"
    assert host.run(["sh", "-c", "pgrep -f '^sleep 47$' | wc -l"]).stdout.strip() in ("0", "1")


def test_output_lines_prefixed(host, conn) -> None:
    stream = io.StringIO()
    out = HostOutput(host.name, True, stream, threading.Lock())
    change.apply_change(conn, task="integration", files=[config_file("good")], out=out)
    assert all(line.startswith(f"[{host.name}] ") for line in stream.getvalue().splitlines())
