"""logs: show or follow the registry's logs on each server, prefixed by server name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import layout
from ..errors import ConfigError
from ..remote import commands
from ..remote.execute import run
from ..remote.hosts import OK, HostOutput, LineStream, Outcome


@dataclass(frozen=True)
class LogSource:
    """A log on the server: the journal of a systemd unit, or a file and the program that writes it."""

    unit: str | None = None
    path: str | None = None
    writer: str = ""


SOURCES: dict[str, LogSource] = {
    "zot": LogSource(unit=layout.ZOT_UNIT),
    "zot-log": LogSource(path=layout.ZOT_LOG, writer="zot"),
    "zot-audit": LogSource(path=layout.ZOT_AUDIT_LOG, writer="zot"),
    "audit": LogSource(path=layout.AUDIT_LOG, writer="the toolkit"),
    "caddy": LogSource(unit=layout.CADDY_UNIT),
    "access": LogSource(path=layout.CADDY_ACCESS_LOG, writer="Caddy"),
    "auto-update": LogSource(unit=layout.AUTOUPDATE_SERVICE),
}
SOURCE_HELP = (
    "zot (journal of zot.service), zot-log (zot's application log), zot-audit (zot's audit "
    "log), audit (the toolkit's change log), caddy (journal of caddy.service), access "
    "(Caddy's access log), auto-update (journal of podman-auto-update.service)"
)


def log_source(name: str) -> LogSource:
    if name not in SOURCES:
        raise ConfigError(f"unknown log {name!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[name]


def log_command(source: str, *, lines: int, since: str | None, follow: bool) -> str:
    """Return the command that prints (or follows) the log named SOURCE."""
    log = log_source(source)
    if lines < 0:
        raise ConfigError(f"--lines {lines} is negative; give 0 or more")
    if log.unit is not None:
        return commands.journal(log.unit, lines=lines, since=since, follow=follow)
    if since:
        raise ConfigError(
            f"--since works with journal logs (zot, caddy, auto-update), not the file {log.path}"
        )
    assert log.path is not None
    return commands.tail_file(log.path, lines=lines, follow=follow)


def file_exists(conn: Any, path: str) -> bool:
    return run(conn, commands.join("test", "-e", path), check=False).exited == 0


def show_logs(
    conn: Any, out: HostOutput, *, source: str, lines: int, since: str | None, follow: bool
) -> Outcome:
    """Stream the log to OUT line by line; with FOLLOW, until Ctrl-C.

    A missing log file gets a note instead of an error, because its program
    creates it with the first entry. With FOLLOW, tail -F (coreutils 9.1 on
    Debian 12) waits for the file to appear and then follows it.
    """
    command = log_command(source, lines=lines, since=since, follow=follow)
    log = log_source(source)
    if log.path is not None and not file_exists(conn, log.path):
        note = f"{log.writer} has not written {log.path} yet"
        if not follow:
            out.note(note)
            return Outcome(OK, note)
        out.note(f"{note}, waiting for it")
    stream = LineStream(out)
    try:
        run(conn, command, out_stream=stream, timeout=None if follow else 120)
    finally:
        stream.finish()
    return Outcome(OK)
