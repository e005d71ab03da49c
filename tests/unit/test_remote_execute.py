"""run(): exit statuses, signals and broken sessions."""

from __future__ import annotations

import pytest

from ops.errors import RemoteError
from ops.remote import facts
from ops.remote.execute import ConnectionLostError, run

from .remote_fakes import FakeServer, answer


class DeadTransport:
    def is_active(self) -> bool:
        return False


def test_failed_command_message() -> None:
    server = FakeServer()
    server.on(r"^false$", answer("", "first\nsecond\n", 3))
    with pytest.raises(RemoteError) as raised:
        run(server, "false")
    assert (
        str(raised.value) == "command failed on server-1 with exit status 3: false\nfirst\nsecond"
    )


def test_killed_by_signal_is_a_failure() -> None:
    server = FakeServer()
    server.on(r"^/tmp/broken version$", answer("", "", -1))
    with pytest.raises(RemoteError, match="killed by a signal") as raised:
        run(server, "/tmp/broken version")
    assert not isinstance(raised.value, ConnectionLostError)
    assert facts.program_version(server, "/tmp/broken") is None


def test_closed_session_is_connection_lost() -> None:
    server = FakeServer()
    server.transport = DeadTransport()
    server.on(r"^sleep 5$", answer("", "", -1))
    with pytest.raises(ConnectionLostError, match="closed while running 'sleep 5'"):
        run(server, "sleep 5")
