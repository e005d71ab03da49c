"""A fake server for the unit tests of ops.remote and ops.daytwo.

FakeServer replaces a Fabric connection: it has run(), sftp(),
close() and host. It interprets the command forms that ops.remote.commands
builds against an in-memory file system and unit table, answers other
commands only through handlers a test registers, and raises AssertionError
on anything else, so a test fails on any command it did not expect.
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from invoke.runners import Result

Handler = Callable[[list[str], str | None], tuple[str, str, int]]


@dataclass
class FakeFile:
    data: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"


@dataclass
class Upload:
    """One SFTP write: the path, the file's mode when the first byte arrived, the data."""

    path: str
    mode_at_first_write: int | None
    data: bytes = b""


@dataclass
class Call:
    command: str
    stdin: str | None


class FakeSFTPFile:
    def __init__(self, server: FakeServer, path: str) -> None:
        self.server = server
        self.path = path
        self.upload = Upload(path, None)
        server.uploads.append(self.upload)

    def chmod(self, mode: int) -> None:
        self.server.files[self.path].mode = mode

    def write(self, data: bytes) -> None:
        self.server.check_connected()
        if self.upload.mode_at_first_write is None:
            self.upload.mode_at_first_write = self.server.files[self.path].mode
        self.upload.data += data
        self.server.files[self.path].data += data

    def __enter__(self) -> FakeSFTPFile:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FakeSFTP:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def open(self, path: str, mode: str) -> FakeSFTPFile:
        self.server.check_connected()
        assert mode == "wx", f"SFTP open mode {mode!r}; the toolkit only creates new files"
        if path in self.server.files:
            raise FileExistsError(17, "File exists", path)
        if self.server.parent(path) not in self.server.dirs:
            raise FileNotFoundError(2, "No such file", path)
        # sftp-server creates files 0666 & ~umask (022).
        self.server.files[path] = FakeFile(b"", 0o644)
        return FakeSFTPFile(self.server, path)


@dataclass
class FakeServer:
    host: str = "server-1"
    files: dict[str, FakeFile] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/"})
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    handlers: list[tuple[re.Pattern[str], Handler]] = field(default_factory=list)
    # Called with each command before it runs; may raise to fake a dropped session.
    before_run: Callable[[str], None] | None = None
    connected: bool = True
    closed: int = 0
    transport: None = None

    # --- set-up helpers -------------------------------------------------

    def add_dir(self, path: str) -> None:
        while path not in ("", "/"):
            self.dirs.add(path)
            path = self.parent(path)

    def add_file(
        self, path: str, content: str | bytes, mode: int = 0o644, owner: str = "root:root"
    ) -> None:
        self.add_dir(self.parent(path))
        data = content.encode() if isinstance(content, str) else content
        user, _, group = owner.partition(":")
        self.files[path] = FakeFile(data, mode, user, group or user)

    def add_unit(self, unit: str, active: str = "active", sub: str = "running") -> None:
        self.units[unit] = {
            "ActiveState": active,
            "SubState": sub,
            "UnitFileState": "enabled",
            "NRestarts": "0",
            "ActiveEnterTimestamp": "Mon 2025-01-06 10:00:00 UTC",
            "Result": "success",
            "ExecMainStatus": "0",
            "restarts": "0",
        }

    def on(self, pattern: str, handler: Handler) -> None:
        """Answer commands that match the regular expression PATTERN (searched) with HANDLER."""
        self.handlers.append((re.compile(pattern), handler))

    def text(self, path: str) -> str:
        return self.files[path].data.decode()

    @property
    def commands(self) -> list[str]:
        return [call.command for call in self.calls]

    @staticmethod
    def parent(path: str) -> str:
        return path.rsplit("/", 1)[0] or "/"

    def check_connected(self) -> None:
        if not self.connected:
            raise EOFError("fake session closed")

    # --- the connection interface ----------------------------------------

    def sftp(self) -> FakeSFTP:
        return FakeSFTP(self)

    def close(self) -> None:
        self.closed += 1
        self.connected = True

    def run(self, command: str, **kwargs: object) -> Result:
        assert kwargs.get("hide") in (True, "stderr"), "remote output must be hidden or streamed"
        assert kwargs.get("echo_stdin") is False
        stream = kwargs.get("in_stream")
        stdin = stream.getvalue() if isinstance(stream, io.StringIO) else None
        assert stream is False or stdin is not None, "run() must never read the local terminal"
        if self.before_run is not None:
            self.before_run(command)
        self.check_connected()
        self.calls.append(Call(command, stdin))
        for pattern, handler in self.handlers:
            if pattern.search(command):
                stdout, stderr, exited = handler(shlex.split(command), stdin)
                break
        else:
            stdout, stderr, exited = self.interpret(command)
        out_stream = kwargs.get("out_stream")
        if out_stream is not None and stdout:
            out_stream.write(stdout)
        return Result(stdout=stdout, stderr=stderr, exited=exited, command=command)

    # --- the interpreter -------------------------------------------------

    def interpret(self, command: str) -> tuple[str, str, int]:
        match = re.fullmatch(
            r"if \[ -e (\S+) \]; then stat -c '%a %U %G' -- \S+ && sha256sum < \S+; "
            r"else echo absent; fi",
            command,
        )
        if match:
            return self._file_state(shlex.split(match.group(1))[0])
        match = re.fullmatch(r"if \[ -d (\S+) \]; then ls -1 -A --sort=time -r -- \S+; fi", command)
        if match:
            path = shlex.split(match.group(1))[0]
            names = sorted(
                {
                    p[len(path) + 1 :].split("/")[0]
                    for p in self.dirs | set(self.files)
                    if p.startswith(path + "/")
                }
            )
            return "".join(f"{name}\n" for name in names), "", 0
        stdout = ""
        for part in command.split(" && "):
            out, err, code = self._simple(shlex.split(part))
            stdout += out
            if code != 0:
                return stdout, err, code
        return stdout, "", 0

    def _file_state(self, path: str) -> tuple[str, str, int]:
        if path in self.dirs:
            raise AssertionError(f"file probe of a directory: {path}")
        file = self.files.get(path)
        if file is None:
            return "absent\n", "", 0
        digest = hashlib.sha256(file.data).hexdigest()
        return f"{file.mode:o} {file.owner} {file.group}\n{digest}  -\n", "", 0

    def _simple(self, argv: list[str]) -> tuple[str, str, int]:
        name, args = argv[0], argv[1:]
        if name == "cat" and args[0] == "--":
            file = self.files.get(args[1])
            if file is None:
                return "", f"cat: {args[1]}: No such file or directory\n", 1
            return file.data.decode(), "", 0
        if name == "mkdir" and args[:2] == ["-p", "--"]:
            self.add_dir(args[2])
            return "", "", 0
        if name == "mkdir" and args[:3] == ["-m", "0700", "--"]:
            path = args[3]
            if path in self.dirs or path in self.files:
                return "", f"mkdir: cannot create directory '{path}': File exists\n", 1
            if self.parent(path) not in self.dirs:
                return (
                    "",
                    f"mkdir: cannot create directory '{path}': No such file or directory\n",
                    1,
                )
            self.dirs.add(path)
            return "", "", 0
        if name == "chmod" and args[1] == "--":
            mode = int(args[0], 8)
            if args[2] in self.files:
                self.files[args[2]].mode = mode
            return "", "", 0
        if name == "chown" and args[0] == "--":
            owner, _, group = args[1].partition(":")
            self.files[args[2]].owner, self.files[args[2]].group = owner, group
            return "", "", 0
        if name == "mv" and args[:3] == ["-f", "-T", "--"]:
            source, target = args[3], args[4]
            if source not in self.files:
                return "", f"mv: cannot stat '{source}'\n", 1
            self.files[target] = self.files.pop(source)
            return "", "", 0
        if name == "cp" and args[:3] == ["-a", "-T", "--"]:
            source, target = args[3], args[4]
            if source not in self.files:
                return "", f"cp: cannot stat '{source}'\n", 1
            file = self.files[source]
            self.files[target] = FakeFile(file.data, file.mode, file.owner, file.group)
            return "", "", 0
        if (
            name == "install"
            and args[0] == "-m"
            and args[2] == "-o"
            and args[4] == "-g"
            and args[6:8] == ["-T", "--"]
        ):
            source, target = args[8], args[9]
            if source not in self.files:
                return "", f"install: cannot stat '{source}'\n", 1
            self.files[target] = FakeFile(
                self.files[source].data, int(args[1], 8), args[3], args[5]
            )
            return "", "", 0
        if name == "rm" and args[:2] == ["-f", "--"]:
            self.files.pop(args[2], None)
            return "", "", 0
        if name == "rm" and args[:2] == ["-rf", "--"]:
            prefix = args[2]
            self.files = {
                p: f
                for p, f in self.files.items()
                if p != prefix and not p.startswith(prefix + "/")
            }
            self.dirs = {d for d in self.dirs if d != prefix and not d.startswith(prefix + "/")}
            return "", "", 0
        if name == "rmdir" and args[0] == "--":
            path = args[1]
            if any(p.startswith(path + "/") for p in set(self.files) | self.dirs):
                return "", f"rmdir: failed to remove '{path}': Directory not empty\n", 1
            self.dirs.discard(path)
            return "", "", 0
        if name == "test" and args[0] == "-d":
            return "", "", 0 if args[1] in self.dirs else 1
        if name == "printf" and args[0] == "%s" and args[2] == ">":
            self.add_file(args[3], args[1], mode=0o644)
            return "", "", 0
        if name == "printf" and args[0] == "%s\\n" and args[2] == ">>":
            path = args[3]
            existing = self.files[path].data if path in self.files else b""
            self.add_file(path, existing + args[1].encode() + b"\n")
            return "", "", 0
        if name == "systemctl" and args[0] in ("restart", "start", "stop") and args[1] == "--":
            unit = self.units.get(args[2])
            if unit is None:
                return "", f"Unit {args[2]} not found.\n", 5
            unit["NRestarts"] = str(int(unit["NRestarts"]) + 1)
            return "", "", 0
        if name == "systemctl" and args[0] == "show":
            properties = args[1].removeprefix("--property=").split(",")
            unit = self.units.get(args[3], {})
            return "".join(f"{p}={unit.get(p, '')}\n" for p in properties), "", 0
        raise AssertionError(f"unexpected command on {self.host}: {shlex.join(argv)}")


def answer(stdout: str = "", stderr: str = "", exited: int = 0) -> Handler:
    """A handler that always returns the same output."""
    return lambda argv, stdin: (stdout, stderr, exited)


def parse_curl_user(stdin: str | None) -> tuple[str, str] | None:
    """Return (user, password) from curl configuration `user = "name:password"`."""
    if not stdin:
        return None
    match = re.fullmatch(r'user = "((?:[^"\\]|\\.)*)"\n', stdin)
    assert match, f"unexpected curl configuration on stdin: {len(stdin)} characters"
    value = re.sub(
        r"\\(.)",
        lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)),
        match.group(1),
    )
    user, _, password = value.partition(":")
    return user, password


def serve_zot(
    server: FakeServer, storage_ok: Callable[[], bool] = lambda: True
) -> list[tuple[str, str]]:
    """Answer curl requests to zot on 127.0.0.1:5000 from the fake server's htpasswd.

    /v2/ returns 401 without valid credentials and 200 with them; /v2/_catalog
    returns 500 when STORAGE_OK() is false, as zot does when S3 rejects it.
    Returns the list of (user, url) logins tried, filled as requests arrive.
    """
    from ops import htpasswd, layout
    from ops.secrets import Secret

    logins: list[tuple[str, str]] = []

    def handler(argv: list[str], stdin: str | None) -> tuple[str, str, int]:
        assert argv[0] == "curl"
        url = argv[-1]
        if server.units[layout.ZOT_UNIT]["ActiveState"] != "active":
            return "000", "curl: (7) Failed to connect", 7
        credentials = parse_curl_user(stdin)
        if credentials is None:
            return "401", "", 0
        user, password = credentials
        logins.append((user, url))
        entries = (
            htpasswd.parse(server.text(layout.ZOT_HTPASSWD))
            if layout.ZOT_HTPASSWD in server.files
            else {}
        )
        if user not in entries or not htpasswd.verify(Secret(password), entries[user]):
            return "401", "", 0
        if url.endswith("/_catalog") and not storage_ok():
            return "500", "", 0
        return "200", "", 0

    server.on(r"^curl .* http://127\.0\.0\.1:5000/", handler)
    return logins


def fast_checks(monkeypatch: object) -> None:
    """Make the post-change checks probe once, without pauses (for a pytest monkeypatch)."""
    from ops.daytwo import common
    from ops.remote import checks

    monkeypatch.setattr(checks, "POLL_INTERVAL", 0)
    monkeypatch.setattr(common, "ZOT_TIMEOUT", 0)
    monkeypatch.setattr(common, "STORAGE_TIMEOUT", 0)
    monkeypatch.setattr(common, "CADDY_TIMEOUT", 0)
