"""Stand-in servers run as child processes on 127.0.0.1, tracked by pid and start time.

Each stand-in writes its output to `<work_dir>/<name>.log` and its pid, start
time and port to `<work_dir>/<name>.json`, so a later process (another Invoke
task, a test's cleanup) can stop it by pid without mistaking a recycled pid
for it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar, Self

from ..system import ProcessId, SandboxError, signal_process, tail, wait_until

LOOPBACK = "127.0.0.1"
# The package directory that contains `ops`, put on PYTHONPATH of Python
# servers so `python -m ops.sandbox.standins...` works without an install.
PROJECT_DIR = Path(__file__).resolve().parents[3]
LOG_TAIL_LINES = 20


class StandinError(SandboxError):
    """A stand-in failed to build, start or respond."""


def run_tool(
    step: str,
    argv: list[str],
    *,
    timeout: float = 300,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` as step `step`; raise StandinError with the output tail when it fails.

    `env` is added to this process's environment.
    """
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            check=False,
        )
    except FileNotFoundError as exc:
        raise StandinError(
            f"{step}: {argv[0]} not found; install it with scripts/install-host-packages.sh"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise StandinError(f"{step}: {argv[0]} timed out after {timeout:.0f} s") from exc
    if result.returncode != 0:
        raise StandinError(
            f"{step}: {' '.join(argv[:3])} ... exited {result.returncode}: "
            f"{tail(result.stderr or result.stdout)}"
        )
    return result


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def http_status(
    url: str, timeout: float = 2.0, headers: dict[str, str] | None = None
) -> int | None:
    """Return the HTTP status of GET `url`, or None when no server responds.

    Proxies from the environment are ignored: every stand-in is on loopback.
    """
    if not url.startswith(("http://", "https://")):
        raise StandinError(f"not an http(s) URL: {url}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (scheme checked)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def python_environment() -> dict[str, str]:
    """Return the environment for a Python child that imports `ops` from this checkout."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{PROJECT_DIR}{os.pathsep}{path}" if path else str(PROJECT_DIR)}


class StandinProcess:
    """A stand-in server run as a child process; subclasses set the command and readiness probe.

    The class is a context manager: `with Server(work_dir) as server:` starts
    it and stops it on exit, also when the block raises.
    """

    name: ClassVar[str] = "standin"
    ready_timeout: ClassVar[float] = 30.0
    # False gives the child only `environment()`, as a container runtime would.
    inherit_environment: ClassVar[bool] = True
    stop_timeout: ClassVar[float] = 10.0

    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.port = port
        self._popen: subprocess.Popen[bytes] | None = None
        self._process: ProcessId | None = None

    # --- what a subclass defines ------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Return variables added to this process's environment for the child."""
        return {}

    def prepare(self) -> None:
        """Write configuration files before the child starts."""

    def probe(self) -> bool:
        """Tell whether the child responds; called until true or `ready_timeout` passes."""
        raise NotImplementedError

    def after_ready(self) -> None:
        """Finish the setup that needs the running server (buckets, users)."""

    # --- paths and state ----------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"{self.name}.log"

    @property
    def state_path(self) -> Path:
        return self.work_dir / f"{self.name}.json"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.require_port()}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def require_port(self) -> int:
        if self.port is None:
            raise StandinError(f"{self.name} has no port yet; call start() first")
        return self.port

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return tail(self.log_path.read_text(errors="replace"), lines)
        except FileNotFoundError:
            return "(no log written)"

    def running(self) -> bool:
        process = self._process or self._recorded_process()
        return process is not None and process.alive()

    def _recorded_process(self) -> ProcessId | None:
        try:
            state = json.loads(self.state_path.read_text())
            return ProcessId.from_json(state["process"])
        except (FileNotFoundError, ValueError, KeyError, TypeError, IndexError):
            return None

    def _write_state(self, extra: dict[str, Any] | None = None) -> None:
        assert self._process is not None
        state = {"process": self._process.to_json(), "port": self.port, **(extra or {})}
        temporary = self.state_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(state) + "\n")
        temporary.replace(self.state_path)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        """Start the child, wait until it responds, then run `after_ready`; return self."""
        recorded = self._recorded_process()
        if recorded is not None and recorded.alive():
            raise StandinError(
                f"{self.name} already runs with pid {recorded.pid} (state in {self.state_path}); "
                "stop it first"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.port is None:
            self.port = free_port()
        try:
            self.prepare()
            self._spawn()
            assert self._popen is not None
            self._process = ProcessId.of(self._popen.pid)
            self._write_state()
            self._wait_ready()
            self.after_ready()
        except BaseException as exc:
            self.stop()
            if isinstance(exc, SandboxError) and not isinstance(exc, StandinError):
                raise StandinError(f"{self.name}: {exc}; log: {self.log_tail()}") from exc
            if isinstance(exc, OSError):
                raise StandinError(f"{self.name} failed to start: {exc}") from exc
            raise
        return self

    def _spawn(self) -> None:
        argv = self.command()
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {self.name} on {LOOPBACK}:{self.port}: {argv[0]}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                env={**(os.environ if self.inherit_environment else {}), **self.environment()},
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        assert self._popen is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self._popen.poll()
            if code is not None:
                raise StandinError(
                    f"{self.name} exited with status {code} before it responded; "
                    f"log {self.log_path}: {self.log_tail()}"
                )
            if self.probe():
                return
            if time.monotonic() >= deadline:
                raise StandinError(
                    f"{self.name} did not respond on port {self.port} within "
                    f"{self.ready_timeout:.0f} s; log {self.log_path}: {self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the child by pid: SIGTERM, a bounded wait, then SIGKILL. Safe to call twice."""
        process = self._process or self._recorded_process()
        sent = process is not None and signal_process(process, signal.SIGTERM)
        if sent and not wait_until(lambda: not self._alive(process), self.stop_timeout):
            signal_process(process, signal.SIGKILL)
            if not wait_until(lambda: not self._alive(process), self.stop_timeout):
                raise StandinError(f"{self.name} (pid {process.pid}) survived SIGKILL")
        if self._popen is not None:
            self._popen.wait(timeout=self.stop_timeout)
            self._popen = None
        self._process = None
        self.state_path.unlink(missing_ok=True)

    def _alive(self, process: ProcessId) -> bool:
        # Reap our own child so it does not linger as a zombie that alive() must skip.
        if self._popen is not None and self._popen.pid == process.pid:
            self._popen.poll()
        return process.alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
