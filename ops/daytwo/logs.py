"""logs: show or follow the registry's logs on each server, prefixed by server name."""

from __future__ import annotations

from typing import Any

from .. import layout
from ..errors import ConfigError
from ..remote import commands
from ..remote.execute import run
from ..remote.hosts import OK, HostOutput, LineStream, Outcome

# Log name -> (systemd unit, None) for a journal, or (None, path) for a file.
SOURCES: dict[str, tuple[str | None, str | None]] = {
    "zot": (layout.ZOT_UNIT, None),
    "zot-log": (None, layout.ZOT_LOG),
    "zot-audit": (None, layout.ZOT_AUDIT_LOG),
    "audit": (None, layout.AUDIT_LOG),
    "caddy": (layout.CADDY_UNIT, None),
    "access": (None, layout.CADDY_ACCESS_LOG),
    "auto-update": (layout.AUTOUPDATE_SERVICE, None),
}
SOURCE_HELP = (
    "zot (journal of zot.service), zot-log (zot's application log), zot-audit (zot's audit "
    "log), audit (the toolkit's change log), caddy (journal of caddy.service), access "
    "(Caddy's access log), auto-update (journal of podman-auto-update.service)"
)


def log_command(source: str, *, lines: int, since: str | None, follow: bool) -> str:
    """Return the command that prints (or follows) the log named SOURCE."""
    if source not in SOURCES:
        raise ConfigError(f"unknown log {source!r}; choose one of {', '.join(SOURCES)}")
    if lines < 0:
        raise ConfigError(f"--lines {lines} is negative; give 0 or more")
    unit, path = SOURCES[source]
    if unit is not None:
        return commands.journal(unit, lines=lines, since=since, follow=follow)
    if since:
        raise ConfigError(
            f"--since works with journal logs (zot, caddy, auto-update), not the file {path}"
        )
    assert path is not None
    return commands.tail_file(path, lines=lines, follow=follow)


def show_logs(
    conn: Any, out: HostOutput, *, source: str, lines: int, since: str | None, follow: bool
) -> Outcome:
    """Stream the log to OUT line by line; with FOLLOW, until Ctrl-C."""
    command = log_command(source, lines=lines, since=since, follow=follow)
    stream = LineStream(out)
    try:
        run(conn, command, out_stream=stream, timeout=None if follow else 120)
    finally:
        stream.finish()
    return Outcome(OK)
