"""The change lock and the audit line."""

from __future__ import annotations

import json
import os

import pytest

from ops import layout
from ops.errors import LockHeldError
from ops.remote import audit, lock

from .remote_fakes import FakeServer

OWNER = lock.OWNER_FILE


@pytest.fixture
def server() -> FakeServer:
    server = FakeServer()
    server.add_dir(layout.TOOLKIT_STATE_DIR)
    return server


def test_lock_taken_and_released(server: FakeServer) -> None:
    with lock.change_lock(server, "rotate-password", out=lambda _line: None) as owner:
        assert layout.LOCK_DIR in server.dirs
        recorded = json.loads(server.text(OWNER))
        assert recorded["task"] == "rotate-password"
        assert recorded["pid"] == os.getpid()
        assert recorded["since"].endswith("Z")
        assert recorded["token"] == owner.token
    assert layout.LOCK_DIR not in server.dirs
    assert OWNER not in server.files


def test_lock_released_when_body_raises(server: FakeServer) -> None:
    with pytest.raises(RuntimeError), lock.change_lock(server, "t", out=lambda _line: None):
        raise RuntimeError("boom")
    assert layout.LOCK_DIR not in server.dirs


def test_held_lock_names_holder(server: FakeServer) -> None:
    server.add_dir(layout.LOCK_DIR)
    holder = lock.LockOwner("alice@laptop", 4242, "upgrade-caddy", "2025-01-06T10:00:00Z", "t0")
    server.add_file(OWNER, holder.to_json())
    with pytest.raises(LockHeldError) as raised, lock.change_lock(server, "t", out=print):
        pytest.fail("the body must not run while another operator holds the lock")
    message = str(raised.value)
    assert "alice@laptop (pid 4242, task upgrade-caddy) since 2025-01-06T10:00:00Z" in message
    assert "--break-lock" in message
    assert json.loads(server.text(OWNER))["operator"] == "alice@laptop"


def test_held_lock_without_owner_file(server: FakeServer) -> None:
    server.add_dir(layout.LOCK_DIR)
    with pytest.raises(LockHeldError, match="unknown owner"):
        lock.acquire(server, "t")


def test_break_lock_takes_over(server: FakeServer) -> None:
    server.add_dir(layout.LOCK_DIR)
    server.add_file(
        OWNER, lock.LockOwner("bob@ci", 1, "restart", "2025-01-01T00:00:00Z", "x").to_json()
    )
    lines: list[str] = []
    with lock.change_lock(server, "restart", break_lock=True, out=lines.append) as owner:
        assert json.loads(server.text(OWNER))["token"] == owner.token
    assert lines[0].startswith("breaking the change lock held by bob@ci")
    assert layout.LOCK_DIR not in server.dirs


def test_lock_broken_by_other_is_left_alone(server: FakeServer) -> None:
    lines: list[str] = []
    with lock.change_lock(server, "t", out=lines.append):
        other = lock.LockOwner("carol@desk", 7, "t", "2025-01-01T00:00:00Z", "other")
        server.add_file(OWNER, other.to_json())
    assert layout.LOCK_DIR in server.dirs
    assert "no longer ours" in lines[-1]


def test_audit_entry_fields() -> None:
    line = audit.entry("add-user", "server-1", "changed", ["updated /etc/zot/htpasswd"])
    data = json.loads(line)
    assert set(data) == {"time", "operator", "task", "host", "result", "changes"}
    assert "\n" not in line
