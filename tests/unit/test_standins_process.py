"""Start, readiness and stop of stand-in processes, with real child processes on loopback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from ops.sandbox.standins.process import (
    StandinError,
    StandinProcess,
    free_port,
    http_status,
)
from ops.sandbox.system import ProcessId


class FileServer(StandinProcess):
    """Python's http.server on loopback: the smallest real stand-in."""

    name = "files"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(self.port)]

    def probe(self) -> bool:
        return http_status(f"{self.url}/") == 200


class ExitingServer(FileServer):
    name = "exiting"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('bad config line 3'); sys.exit(3)"]


class SilentServer(FileServer):
    name = "silent"
    ready_timeout: ClassVar[float] = 0.5

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(30)"]


class FailingSetupServer(FileServer):
    name = "failing-setup"

    def after_ready(self) -> None:
        raise StandinError("bucket creation failed")


def test_start_serves_and_stop_ends(tmp_path: Path):
    server = FileServer(tmp_path)

    with server:
        pid = server.pid
        assert pid is not None
        assert server.running()
        assert http_status(f"{server.url}/") == 200
        state = json.loads(server.state_path.read_text())
        assert state["port"] == server.port
        assert state["process"][0] == pid

    assert not server.running()
    assert not server.state_path.exists()
    assert http_status(f"http://127.0.0.1:{server.port}/", timeout=0.5) is None


def test_stop_twice_is_harmless(tmp_path: Path):
    server = FileServer(tmp_path).start()

    server.stop()
    server.stop()

    assert not server.running()


def test_start_rejects_running_instance(tmp_path: Path):
    with FileServer(tmp_path) as first:
        second = FileServer(tmp_path)

        with pytest.raises(StandinError, match=f"already runs with pid {first.pid}"):
            second.start()


def test_stop_from_state_file(tmp_path: Path):
    first = FileServer(tmp_path).start()
    process = ProcessId.from_json(json.loads(first.state_path.read_text())["process"])

    FileServer(tmp_path).stop()
    first.stop()  # reaps the child

    assert not process.alive()
    assert not first.state_path.exists()


def test_early_exit_reports_log_tail(tmp_path: Path):
    server = ExitingServer(tmp_path)

    with pytest.raises(StandinError) as raised:
        server.start()

    assert "exited with status 3" in str(raised.value)
    assert "bad config line 3" in str(raised.value)
    assert not server.state_path.exists()


def test_readiness_timeout_stops_child(tmp_path: Path):
    server = SilentServer(tmp_path)

    with pytest.raises(StandinError, match="did not respond on port"):
        server.start()

    assert server.pid is None
    assert not server.state_path.exists()


def test_failed_setup_stops_child(tmp_path: Path):
    server = FailingSetupServer(tmp_path)

    with pytest.raises(StandinError, match="bucket creation failed"):
        server.start()

    assert not server.running()


def test_given_port_is_used(tmp_path: Path):
    port = free_port()

    with FileServer(tmp_path, port=port) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        assert http_status(f"http://127.0.0.1:{port}/") == 200


def test_http_status_rejects_other_schemes():
    with pytest.raises(StandinError, match="not an http"):
        http_status("file:///etc/passwd")
