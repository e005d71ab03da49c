"""Running a per-server function on several servers."""

from __future__ import annotations

import io
import threading

import pytest

from ops.errors import RemoteError
from ops.remote import hosts
from ops.remote.connect import Target

from .remote_fakes import FakeServer

TARGETS = [Target("alpha", "192.0.2.1", 22), Target("beta", "192.0.2.2", 22)]


def connect_fake(target: Target) -> FakeServer:
    return FakeServer(host=target.address)


def test_results_per_host_in_order() -> None:
    stream = io.StringIO()
    barrier = threading.Barrier(2, timeout=5)

    def work(conn: FakeServer, out: hosts.HostOutput) -> hosts.Outcome:
        barrier.wait()  # both servers run at the same time
        out("step one")
        if conn.host == "192.0.2.2":
            raise RemoteError("beta broke")
        return hosts.Outcome(hosts.CHANGED, "updated")

    results = hosts.run_on_hosts(TARGETS, connect_fake, work, stream=stream)
    assert [(r.target.name, r.status, r.message) for r in results] == [
        ("alpha", "changed", "updated"),
        ("beta", "failed", "beta broke"),
    ]
    assert hosts.any_failed(results)
    lines = stream.getvalue().splitlines()
    assert "[alpha] step one" in lines
    assert "[beta] failed: beta broke" in lines
    assert hosts.summary(results).splitlines() == [
        "alpha: changed: updated",
        "beta: failed: beta broke",
        "1 changed, 1 failed",
    ]


def test_single_host_not_prefixed() -> None:
    stream = io.StringIO()
    results = hosts.run_on_hosts(
        TARGETS[:1],
        connect_fake,
        lambda conn, out: (out("hello"), hosts.Outcome(hosts.UNCHANGED))[1],
        stream=stream,
    )
    assert stream.getvalue() == "hello\n"
    assert not hosts.any_failed(results)


def test_connection_closed_after_work() -> None:
    made: list[FakeServer] = []

    def connect(target: Target) -> FakeServer:
        made.append(FakeServer(host=target.address))
        return made[-1]

    def work(conn: FakeServer, out: hosts.HostOutput) -> hosts.Outcome:
        raise RemoteError("x")

    hosts.run_on_hosts(TARGETS, connect, work, stream=io.StringIO())
    assert [server.closed for server in made] == [1, 1]


def test_bug_is_not_swallowed() -> None:
    def work(conn: FakeServer, out: hosts.HostOutput) -> hosts.Outcome:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        hosts.run_on_hosts(TARGETS, connect_fake, work, stream=io.StringIO())


def test_line_stream_prefixes_whole_lines() -> None:
    stream = io.StringIO()
    out = hosts.HostOutput("alpha", True, stream, threading.Lock())
    lines = hosts.LineStream(out)
    lines.write("first li")
    lines.flush()  # Invoke flushes after each chunk, even mid-line
    lines.write("ne\nsecond\nthi")
    lines.flush()
    lines.finish()
    assert stream.getvalue() == "[alpha] first line\n[alpha] second\n[alpha] thi\n"


@pytest.mark.parametrize(
    ("changed", "dry_run", "expected"),
    [
        (True, False, "changed"),
        (True, True, "would change"),
        (False, False, "no change"),
        (False, True, "no change"),
    ],
)
def test_change_status(changed: bool, dry_run: bool, expected: str) -> None:
    assert hosts.change_status(changed, dry_run) == expected


def test_summary_of_dry_run() -> None:
    results = [
        hosts.HostResult(TARGETS[0], hosts.WOULD_CHANGE, "/etc/zot/htpasswd"),
        hosts.HostResult(TARGETS[1], hosts.UNCHANGED),
    ]
    assert hosts.summary(results).splitlines() == [
        "alpha: would change: /etc/zot/htpasswd",
        "beta: no change",
        "1 would change, 1 no change",
    ]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [(True, "[alpha] no log yet\n"), (False, "alpha: no log yet\n")],
)
def test_note_names_host(prefix: bool, expected: str) -> None:
    stream = io.StringIO()
    out = hosts.HostOutput("alpha", prefix, stream, threading.Lock())
    out.note("no log yet")
    assert stream.getvalue() == expected
