"""Exact command strings, and hostile values run through a real bash."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from ops.remote import commands

HOSTILE = [
    "a b",
    "name; touch PWNED",
    "$(touch PWNED)",
    "`touch PWNED`",
    "it's",
    'say "hi"',
    "-rf",
    "line\nbreak",
    "*",
    "a && touch PWNED",
    "x > PWNED",
]


def bash(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
    )


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (
            commands.file_state("/etc/zot/config.json"),
            "if [ -e /etc/zot/config.json ]; then stat -c '%a %U %G' -- /etc/zot/config.json "
            "&& sha256sum < /etc/zot/config.json; else echo absent; fi",
        ),
        (
            commands.file_state("/tmp/x; rm -rf /"),
            "if [ -e '/tmp/x; rm -rf /' ]; then stat -c '%a %U %G' -- '/tmp/x; rm -rf /' "
            "&& sha256sum < '/tmp/x; rm -rf /'; else echo absent; fi",
        ),
        (commands.read_file("/etc/zot/config.json"), "cat -- /etc/zot/config.json"),
        (commands.read_file("$(reboot)"), "cat -- '$(reboot)'"),
        (commands.make_directory("/var/lib/zot-hetzner"), "mkdir -p -- /var/lib/zot-hetzner"),
        (
            commands.make_directory("/var/lib/zot-hetzner/backups", 0o700),
            "mkdir -p -- /var/lib/zot-hetzner/backups && chmod 0700 -- /var/lib/zot-hetzner/backups",
        ),
        (commands.change_owner("/f", "root", "zot"), "chown -- root:zot /f"),
        (commands.change_owner("/f", "a;b", "c d"), "chown -- 'a;b:c d' /f"),
        (commands.change_mode("/f", 0o600), "chmod 0600 -- /f"),
        (commands.rename("/etc/.a.tmp", "/etc/a"), "mv -f -T -- /etc/.a.tmp /etc/a"),
        (commands.copy_preserving("/a b", "/c"), "cp -a -T -- '/a b' /c"),
        (commands.remove_file("-rf"), "rm -f -- -rf"),
        (commands.remove_tree("/var/lib/zot-hetzner/lock"), "rm -rf -- /var/lib/zot-hetzner/lock"),
        (commands.remove_directory("/d"), "rmdir -- /d"),
        (commands.is_directory("/d x"), "test -d '/d x'"),
        (
            commands.append_line("/var/log/zot-hetzner/audit.log", '{"task": "x\'y"}'),
            "mkdir -p -- /var/log/zot-hetzner && printf '%s\\n' "
            '\'{"task": "x\'"\'"\'y"}\' >> /var/log/zot-hetzner/audit.log',
        ),
        (commands.write_text("/o", "a'b"), "printf '%s' 'a'\"'\"'b' > /o"),
        (commands.make_lock_directory("/l"), "mkdir -m 0700 -- /l"),
        (commands.systemctl("restart", "zot.service"), "systemctl restart -- zot.service"),
        (commands.systemctl("restart", "x;reboot"), "systemctl restart -- 'x;reboot'"),
        (
            commands.unit_properties("zot.service", ["ActiveState", "NRestarts"]),
            "systemctl show --property=ActiveState,NRestarts -- zot.service",
        ),
        (commands.container_inspect("zot"), "podman container inspect -- zot"),
        (commands.program_version("/usr/local/bin/caddy"), "/usr/local/bin/caddy version"),
        (commands.architecture(), "dpkg --print-architecture"),
        (
            commands.http_status("http://127.0.0.1:5000/v2/", config_on_stdin=True),
            "curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -K - http://127.0.0.1:5000/v2/",
        ),
        (
            commands.http_status(
                "https://cr.example.com/v2/", insecure=True, resolve="cr.example.com:443:127.0.0.1"
            ),
            "curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --insecure "
            "--resolve cr.example.com:443:127.0.0.1 https://cr.example.com/v2/",
        ),
        (
            commands.download("https://h/x?a=1&b=2", "/tmp/d/x.tar.gz"),
            "curl -fsSL --max-time 300 -o /tmp/d/x.tar.gz 'https://h/x?a=1&b=2'",
        ),
        (commands.fetch_text("https://api/latest"), "curl -fsSL --max-time 30 https://api/latest"),
        (commands.sha512("/d/c.tar.gz"), "sha512sum -- /d/c.tar.gz"),
        (
            commands.extract_member("/d/c.tar.gz", "/d", "caddy"),
            "tar -xzf /d/c.tar.gz -C /d -- caddy",
        ),
        (
            commands.install_file("/d/caddy", "/usr/local/bin/.caddy.new", 0o755),
            "install -m 0755 -o root -g root -T -- /d/caddy /usr/local/bin/.caddy.new",
        ),
        (
            commands.caddy_validate("/d/caddy", "/etc/caddy/Caddyfile"),
            "/d/caddy validate --config /etc/caddy/Caddyfile --adapter caddyfile",
        ),
        (
            commands.journal("zot.service", lines=50, since="1 hour ago", follow=True),
            "journalctl --no-pager --output=short-iso -u zot.service -n 50 "
            "--since '1 hour ago' --follow",
        ),
        (
            commands.journal("caddy.service", lines=10),
            "journalctl --no-pager --output=short-iso -u caddy.service -n 10",
        ),
        (
            commands.tail_file("/var/log/zot/zot.log", lines=20, follow=True),
            "tail -n 20 -F -- /var/log/zot/zot.log",
        ),
        (commands.autoupdate(dry_run=True), "podman auto-update --dry-run --format json"),
        (commands.autoupdate(dry_run=False), "podman auto-update --format json"),
        (
            commands.list_directory("/b"),
            "if [ -d /b ]; then ls -1 -A --sort=time -r -- /b; fi",
        ),
    ],
)
def test_builder_exact_string(built: str, expected: str) -> None:
    assert built == expected


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_name_stays_one_argument(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"content\n")
    for command in (
        commands.file_state(str(path)),
        commands.read_file(str(path)),
        commands.copy_preserving(str(path), str(path) + ".copy"),
        commands.change_mode(str(path) + ".copy", 0o600),
        commands.rename(str(path) + ".copy", str(path) + ".moved"),
        commands.remove_file(str(path) + ".moved"),
    ):
        result = bash(command, tmp_path)
        assert result.returncode == 0, (command, result.stderr)
    assert not (tmp_path / "PWNED").exists()
    state = bash(commands.file_state(str(path)), tmp_path).stdout.splitlines()
    assert state[0].split()[0] == "644"
    assert state[1].split()[0] == hashlib.sha256(b"content\n").hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_written_verbatim(tmp_path: Path, text: str) -> None:
    log = tmp_path / "logs" / "audit.log"
    assert bash(commands.append_line(str(log), text), tmp_path).returncode == 0
    assert bash(commands.append_line(str(log), text), tmp_path).returncode == 0
    assert log.read_text() == f"{text}\n{text}\n"
    owner = tmp_path / "owner"
    assert bash(commands.write_text(str(owner), text), tmp_path).returncode == 0
    assert owner.read_text() == text
    assert not (tmp_path / "PWNED").exists()


def test_missing_file_reports_absent(tmp_path: Path) -> None:
    result = bash(commands.file_state(str(tmp_path / "nope; touch PWNED")), tmp_path)
    assert result.stdout == "absent\n"
    assert not (tmp_path / "PWNED").exists()


def test_lock_directory_mkdir_is_exclusive(tmp_path: Path) -> None:
    lock = str(tmp_path / "lock dir")
    assert bash(commands.make_lock_directory(lock), tmp_path).returncode == 0
    second = bash(commands.make_lock_directory(lock), tmp_path)
    assert second.returncode != 0
    assert "File exists" in second.stderr
    assert (tmp_path / "lock dir").stat().st_mode & 0o777 == 0o700


def test_no_builder_accepts_a_secret() -> None:
    # Builders take paths, names and URLs only; credentials go on stdin (-K -).
    command = commands.http_status("http://127.0.0.1:5000/v2/", config_on_stdin=True)
    assert "-K -" in command
    assert "user" not in command
