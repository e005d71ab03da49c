"""The change lock on a server: one operator changes a server at a time.

Taking the lock is an atomic `mkdir` of layout.LOCK_DIR; the directory then
gets an `owner` file (JSON) naming who took it, from which process, for which
task and when. A held lock raises LockHeldError with those details; a lock
left behind by a run that died is removed with break_lock=True (`--break-lock`).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from .. import layout
from ..errors import LockHeldError, RemoteError
from . import commands
from .execute import host_of, run

OWNER_FILE = f"{layout.LOCK_DIR}/owner"


def local_operator() -> str:
    """Return `user@host` of the machine running the toolkit."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LockOwner:
    """Who holds a server's change lock; `token` tells our own lock from another's."""

    operator: str
    pid: int
    task: str
    since: str
    token: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> LockOwner | None:
        try:
            data = json.loads(text)
            return cls(
                operator=str(data["operator"]),
                pid=int(data["pid"]),
                task=str(data["task"]),
                since=str(data["since"]),
                token=str(data.get("token", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.operator} (pid {self.pid}, task {self.task}) since {self.since}"


def read_owner(conn: Any) -> LockOwner | None:
    result = run(conn, commands.read_file(OWNER_FILE), check=False)
    return LockOwner.parse(result.stdout) if result.exited == 0 else None


def acquire(
    conn: Any, task: str, *, break_lock: bool = False, out: Callable[[str], None] = print
) -> LockOwner:
    """Take the change lock on CONN's server for TASK and return our owner record."""
    owner = LockOwner(
        operator=local_operator(),
        pid=os.getpid(),
        task=task,
        since=utc_now(),
        token=secrets.token_hex(8),
    )
    run(conn, commands.make_directory(layout.TOOLKIT_STATE_DIR))
    for _attempt in range(2):
        made = run(conn, commands.make_lock_directory(layout.LOCK_DIR), check=False)
        if made.exited == 0:
            run(conn, commands.write_text(OWNER_FILE, owner.to_json()))
            return owner
        if run(conn, commands.is_directory(layout.LOCK_DIR), check=False).exited != 0:
            raise RemoteError(
                f"could not create the change lock {layout.LOCK_DIR} on {host_of(conn)}: "
                f"{made.stderr.strip()}"
            )
        holder = read_owner(conn)
        held_by = holder.describe() if holder else "an unknown owner (no readable owner file)"
        if not break_lock:
            raise LockHeldError(
                f"the change lock on {host_of(conn)} is held by {held_by}. Wait for that run "
                "to finish; if it died, run the task again with --break-lock"
            )
        out(f"breaking the change lock held by {held_by}")
        run(conn, commands.remove_tree(layout.LOCK_DIR))
        break_lock = False
    raise LockHeldError(
        f"the change lock on {host_of(conn)} was taken again by another run right after "
        "it was broken; find out who is changing this server before you retry"
    )


def release(conn: Any, owner: LockOwner, *, out: Callable[[str], None] = print) -> None:
    """Remove the lock if it is still ours; a lock someone broke and retook stays."""
    holder = read_owner(conn)
    if holder is None or holder.token != owner.token:
        out("the change lock is no longer ours (someone broke it); leaving it in place")
        return
    run(conn, commands.remove_file(OWNER_FILE))
    run(conn, commands.remove_directory(layout.LOCK_DIR))


@contextmanager
def change_lock(
    conn: Any,
    task: str,
    *,
    break_lock: bool = False,
    out: Callable[[str], None] = print,
) -> Iterator[LockOwner]:
    """Hold the change lock for the body of the with-statement, releasing it in any case."""
    owner = acquire(conn, task, break_lock=break_lock, out=out)
    try:
        yield owner
    except BaseException:
        try:
            release(conn, owner, out=out)
        except RemoteError as error:
            out(
                f"could not release the change lock on {host_of(conn)} ({error}); "
                "the next run needs --break-lock"
            )
        raise
    else:
        release(conn, owner, out=out)
