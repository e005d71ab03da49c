"""Builders of remote shell commands; they only build strings and run nothing.

Every value that comes from settings, the command line or a server is quoted
with shlex.quote, and `--` ends the options wherever a tool accepts it, so a
path or name that starts with a dash or contains shell syntax stays one
argument. No builder takes a secret: secrets reach a server as SFTP file
content or on a command's standard input.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

# Printed by file_state when the path does not exist.
ABSENT = "absent"
# curl's --write-out format that prints the HTTP status code alone (000 without a response).
CURL_WRITE_OUT = "%{http_code}"


def _q(value: object) -> str:
    return shlex.quote(str(value))


def join(*parts: object) -> str:
    """Quote each part and join them with spaces."""
    return " ".join(_q(part) for part in parts)


def file_state(path: str) -> str:
    """Print `MODE OWNER GROUP` and `SHA256  -` of a file, or `absent`.

    sha256sum reads the file on stdin, so a name with a newline or backslash
    does not make it escape the name and prefix the line with a backslash.
    """
    p = _q(path)
    return (
        f"if [ -e {p} ]; then stat -c '%a %U %G' -- {p} && sha256sum < {p}; else echo {ABSENT}; fi"
    )


def read_file(path: str) -> str:
    return f"cat -- {_q(path)}"


def make_directory(path: str, mode: int | None = None) -> str:
    """Create PATH and its parents; with MODE, the last component gets that mode."""
    command = f"mkdir -p -- {_q(path)}"
    if mode is not None:
        command += f" && chmod {mode:04o} -- {_q(path)}"
    return command


def change_owner(path: str, owner: str, group: str) -> str:
    return f"chown -- {_q(f'{owner}:{group}')} {_q(path)}"


def change_mode(path: str, mode: int) -> str:
    return f"chmod {mode:04o} -- {_q(path)}"


def rename(source: str, target: str) -> str:
    """Move SOURCE onto TARGET; within one file system this is an atomic rename(2)."""
    return f"mv -f -T -- {_q(source)} {_q(target)}"


def copy_preserving(source: str, target: str) -> str:
    """Copy SOURCE to TARGET keeping mode, owner and timestamps."""
    return f"cp -a -T -- {_q(source)} {_q(target)}"


def remove_file(path: str) -> str:
    return f"rm -f -- {_q(path)}"


def remove_tree(path: str) -> str:
    return f"rm -rf -- {_q(path)}"


def remove_directory(path: str) -> str:
    """Remove an empty directory; fails if it contains anything."""
    return f"rmdir -- {_q(path)}"


def is_directory(path: str) -> str:
    return f"test -d {_q(path)}"


def append_line(path: str, line: str) -> str:
    """Append LINE and a newline to PATH, creating its directory if needed."""
    directory = path.rsplit("/", 1)[0] or "/"
    return f"mkdir -p -- {_q(directory)} && printf '%s\\n' {_q(line)} >> {_q(path)}"


def write_text(path: str, text: str) -> str:
    """Write TEXT to PATH through printf; only for short text that is not secret."""
    return f"printf '%s' {_q(text)} > {_q(path)}"


def make_lock_directory(path: str) -> str:
    """Create the lock directory; mkdir fails if it exists, which makes taking the lock atomic."""
    return f"mkdir -m 0700 -- {_q(path)}"


def systemctl(action: str, unit: str) -> str:
    return f"systemctl {_q(action)} -- {_q(unit)}"


def unit_properties(unit: str, properties: Iterable[str]) -> str:
    names = ",".join(properties)
    return f"systemctl show --property={_q(names)} -- {_q(unit)}"


def container_inspect(name: str) -> str:
    return f"podman container inspect -- {_q(name)}"


def program_version(binary: str) -> str:
    """Run `BINARY version`; Caddy prints `v2.7.6 h1:...`."""
    return f"{_q(binary)} version"


def architecture() -> str:
    """Print Debian's name for the CPU architecture (amd64, arm64)."""
    return "dpkg --print-architecture"


def http_status(
    url: str,
    *,
    config_on_stdin: bool = False,
    insecure: bool = False,
    resolve: str | None = None,
    max_seconds: int = 10,
) -> str:
    """Print the HTTP status code of a GET to URL, or 000 when nothing responded.

    With CONFIG_ON_STDIN, curl reads more options from standard input (`-K -`),
    which is how credentials reach it without appearing in its argv.
    """
    parts = ["curl", "-sS", "-o", "/dev/null", "-w", CURL_WRITE_OUT, "--max-time", str(max_seconds)]
    if insecure:
        parts.append("--insecure")
    if resolve:
        parts += ["--resolve", resolve]
    if config_on_stdin:
        parts += ["-K", "-"]
    parts.append(url)
    return join(*parts)


def download(url: str, target: str, *, max_seconds: int = 300) -> str:
    """Fetch URL into TARGET, failing on an HTTP error status."""
    return join("curl", "-fsSL", "--max-time", str(max_seconds), "-o", target, url)


def fetch_text(url: str, *, max_seconds: int = 30) -> str:
    """Print the body of URL, failing on an HTTP error status."""
    return join("curl", "-fsSL", "--max-time", str(max_seconds), url)


def sha512(path: str) -> str:
    return f"sha512sum -- {_q(path)}"


def extract_member(archive: str, directory: str, member: str) -> str:
    """Extract one MEMBER of a .tar.gz ARCHIVE into DIRECTORY."""
    return f"tar -xzf {_q(archive)} -C {_q(directory)} -- {_q(member)}"


def install_file(
    source: str, target: str, mode: int, owner: str = "root", group: str = "root"
) -> str:
    """Copy SOURCE to TARGET with an explicit mode and owner (install(1))."""
    return f"install -m {mode:04o} -o {_q(owner)} -g {_q(group)} -T -- {_q(source)} {_q(target)}"


def caddy_validate(binary: str, caddyfile: str) -> str:
    """Check a Caddyfile with BINARY; --adapter is needed when the name is not `Caddyfile`."""
    return f"{_q(binary)} validate --config {_q(caddyfile)} --adapter caddyfile"


def journal(unit: str, *, lines: int, since: str | None = None, follow: bool = False) -> str:
    parts = ["journalctl", "--no-pager", "--output=short-iso", "-u", unit, "-n", str(lines)]
    if since:
        parts += ["--since", since]
    if follow:
        parts.append("--follow")
    return join(*parts)


def tail_file(path: str, *, lines: int, follow: bool = False) -> str:
    parts = ["tail", "-n", str(lines)]
    if follow:
        parts.append("-F")
    return join(*parts, "--", path)


def autoupdate(*, dry_run: bool) -> str:
    """Run podman auto-update; with DRY_RUN it only reports which units are pending."""
    parts = ["podman", "auto-update", "--format", "json"]
    if dry_run:
        parts.insert(2, "--dry-run")
    return join(*parts)


def list_directory(path: str) -> str:
    """List the entries of PATH, one a line, oldest first; prints nothing if PATH is missing."""
    return f"if [ -d {_q(path)} ]; then ls -1 -A --sort=time -r -- {_q(path)}; fi"
