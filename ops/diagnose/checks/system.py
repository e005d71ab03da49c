"""Checks of the machine: resources, clock, logs, first boot and toolkit state."""

from __future__ import annotations

from dataclasses import replace

from ... import layout
from ..result import CheckResult, Inputs, fail, ok, skip, warn
from .common import RERUN_BOOTSTRAP, duration, logs, probe_error, size

DISK_FAIL_RATIO, DISK_FAIL_BYTES = 0.05, 512 * 1024**2
DISK_WARN_RATIO, DISK_WARN_BYTES = 0.15, 2 * 1024**3
INODE_FAIL_RATIO, INODE_WARN_RATIO = 0.05, 0.10
MEMORY_FAIL_RATIO, MEMORY_WARN_RATIO = 0.05, 0.10
# Seconds the server's clock may differ from this machine's.
SKEW_WARN, SKEW_FAIL = 5.0, 60.0

# Commands that free space on each path the probe measures.
_DISK_FIXES = {
    "/var/lib/containers": "podman image prune --all --force",
    "/var/log": "journalctl --vacuum-size=500M",
    "/": "apt-get clean",
}
# Units with a check of their own; failed-units lists the others.
_COVERED_UNITS = {
    layout.ZOT_UNIT,
    layout.CADDY_UNIT,
    layout.AUTOUPDATE_TIMER,
    layout.AUTOUPDATE_SERVICE,
}
CLOUD_INIT_LOG = "/var/log/cloud-init-output.log"


def disk(inputs: Inputs) -> CheckResult:
    disks = inputs.facts.get("disks") or {}
    if probe_error(disks) and not isinstance(disks.get("/"), dict):
        return skip(f"disk usage not reported: {probe_error(disks)}")
    by_device: dict[object, list[str]] = {}
    for path, facts in disks.items():
        if isinstance(facts, dict) and facts.get("exists"):
            by_device.setdefault(facts.get("device"), []).append(path)

    worst = "ok"
    notes, fixes = [], []
    for paths in by_device.values():
        facts = disks[paths[0]]
        total, free = facts.get("total_bytes") or 0, facts.get("available_bytes") or 0
        inodes, free_inodes = facts.get("inodes_total") or 0, facts.get("inodes_available") or 0
        ratio = free / total if total else 1.0
        inode_ratio = free_inodes / inodes if inodes else 1.0
        level = "ok"
        if ratio < DISK_FAIL_RATIO or free < DISK_FAIL_BYTES or inode_ratio < INODE_FAIL_RATIO:
            level = "fail"
        elif ratio < DISK_WARN_RATIO or free < DISK_WARN_BYTES or inode_ratio < INODE_WARN_RATIO:
            level = "warn"
        note = f"{', '.join(paths)}: {size(free)} of {size(total)} free ({ratio:.0%})"
        if inode_ratio < INODE_WARN_RATIO:
            note += f", {inode_ratio:.0%} inodes free"
        notes.append(note)
        if level != "ok":
            fixes.extend(_DISK_FIXES[path] for path in paths if path in _DISK_FIXES)
            if worst != "fail":
                worst = level

    evidence = "; ".join(notes) or "no path measured"
    if worst == "ok":
        return ok(evidence)

    make = fail if worst == "fail" else warn
    return make(
        evidence,
        "a full disk stops podman pulls, zot's local cache and the journal",
        " && ".join(dict.fromkeys(fixes)) or "du -xsh /var/* | sort -h",
        "server",
    )


def memory(inputs: Inputs) -> CheckResult:
    facts = inputs.facts.get("memory") or {}
    total, available = facts.get("total_bytes"), facts.get("available_bytes")
    if not total or available is None:
        return skip(f"memory not reported: {probe_error(facts) or 'no /proc/meminfo'}")

    ratio = available / total
    evidence = f"{size(available)} of {size(total)} available ({ratio:.0%})"
    oom = facts.get("oom_kills_since_boot") or 0
    fix = "hcloud server change-type SERVER --server-type LARGER_TYPE"
    if ratio < MEMORY_FAIL_RATIO:
        return fail(evidence, "the kernel will kill processes, zot first", fix, "local")

    if ratio < MEMORY_WARN_RATIO:
        return warn(evidence, "memory is nearly used up", fix, "local")

    if oom:
        return warn(
            f"{evidence}; the kernel killed {oom} processes for lack of memory since boot",
            "memory ran out at some point",
            "journalctl -k | grep -i 'out of memory'",
            "server",
        )
    return ok(evidence)


def clock(inputs: Inputs) -> CheckResult:
    facts = inputs.facts
    local = inputs.local
    skew = None
    server_time = facts.get("started_at")
    if server_time and local.sent_at and local.received_at:
        # The probe read its clock between our send and our receive.
        if server_time < local.sent_at:
            skew = server_time - local.sent_at
        elif server_time > local.received_at:
            skew = server_time - local.received_at
        else:
            skew = 0.0

    skew_note = f"offset from this machine {skew:+.1f} s" if skew is not None else "offset unknown"
    timedate = facts.get("timedate") or {}
    properties = timedate.get("properties") or {}
    container = (facts.get("system") or {}).get("container") or "none"
    if skew is not None and abs(skew) > SKEW_FAIL:
        return fail(
            f"server clock differs from this machine's by {duration(skew)} "
            f"(NTPSynchronized={properties.get('NTPSynchronized', '?')})",
            "one of the two clocks is wrong; on the server that breaks S3 signatures and "
            "certificate checks",
            "timedatectl set-ntp true && timedatectl timesync-status",
            "server",
        )

    if container != "none":
        return ok(
            f"runs in a {container} container, which takes its clock from the host; {skew_note}"
        )

    if timedate.get("rc") != 0:
        return warn(
            f"timedatectl failed: {timedate.get('error') or 'unknown error'}; {skew_note}",
            "the synchronisation state is unknown",
            "timedatectl status",
            "server",
        )

    if properties.get("NTP") == "no":
        return fail(
            f"NTP synchronisation is off; {skew_note}",
            "the clock drifts, and S3 rejects requests more than 15 minutes off",
            "timedatectl set-ntp true",
            "server",
        )

    if properties.get("NTPSynchronized") != "yes":
        return warn(
            f"NTP is on but the clock is not synchronised; {skew_note}",
            "systemd-timesyncd cannot reach its NTP servers (outbound UDP 123 blocked?)",
            "systemctl restart systemd-timesyncd && timedatectl timesync-status",
            "server",
        )

    if skew is not None and abs(skew) > SKEW_WARN:
        return warn(
            f"clock synchronised, but {skew_note}",
            "this machine's clock may be the one that is off",
        )
    return ok(f"synchronised (NTP), {skew_note}")


def _log_check(sources: list[dict], extra: str, service: str, log_source: str) -> CheckResult:
    readable = [source for source in sources if "errors" in source]
    if not readable:
        reasons = "; ".join(
            f"{source.get('source')}: {source.get('error') or 'absent'}" for source in sources
        )
        return skip(f"no log could be read ({reasons})")

    errors = sum(source["errors"] for source in readable)
    lines = sum(source["lines"] for source in readable)
    latest = max(
        (source for source in readable if source.get("sample")),
        key=lambda source: source.get("sample_time") or 0,
        default=None,
    )

    counts = ", ".join(f"{source['source']}: {source['errors']}" for source in readable)
    if errors:
        return warn(
            f"{errors} error lines of {lines} ({counts}){extra}; latest: {latest['sample']}"
            if latest
            else f"{errors} error lines of {lines} ({counts}){extra}",
            f"{service} logged errors recently",
            logs(log_source),
            "local",
        )

    if extra:
        return warn(
            f"no error lines in {lines}{extra}",
            f"{service} answered with server errors",
            logs("access"),
            "local",
        )
    return ok(f"no error lines in {lines} ({', '.join(s['source'] for s in readable)})")


def zot_logs(inputs: Inputs) -> CheckResult:
    logs_facts = inputs.facts.get("logs") or {}
    if probe_error(logs_facts):
        return skip(f"logs not read: {probe_error(logs_facts)}")

    window = duration(logs_facts.get("window_seconds") or 0)
    sources = logs_facts.get("zot") or []
    # The toolkit's zot config logs to a file, so errors are usually there and not in the journal.
    in_file = any(s.get("errors") for s in sources if s.get("source") == layout.ZOT_LOG)
    result = _log_check(sources, "", "zot", "zot-log" if in_file else "zot")
    return _with_window(result, window)


def caddy_logs(inputs: Inputs) -> CheckResult:
    logs_facts = inputs.facts.get("logs") or {}
    if probe_error(logs_facts):
        return skip(f"logs not read: {probe_error(logs_facts)}")

    window = duration(logs_facts.get("window_seconds") or 0)
    access = logs_facts.get("caddy_access") or {}
    extra = ""
    if access.get("server_errors"):
        extra = f"; {access['server_errors']} of {access['requests']} requests answered 5xx"
    result = _log_check(logs_facts.get("caddy") or [], extra, "caddy", "caddy")
    return _with_window(result, window)


def _with_window(result: CheckResult, window: str) -> CheckResult:
    if result.status == "skip":
        return result
    return replace(result, evidence=f"last {window}: {result.evidence}")


def cloud_init(inputs: Inputs) -> CheckResult:
    facts = inputs.facts.get("cloud_init") or {}
    if facts.get("status_rc") is None:
        return skip(f"cloud-init status unavailable: {facts.get('error') or probe_error(facts)}")

    fields = facts.get("status") or {}
    status = fields.get("status", "unknown")
    errors = facts.get("result_errors") or []
    fix = f"tail -n 50 {CLOUD_INIT_LOG}; after fixing the reason: {RERUN_BOOTSTRAP}"
    if status == "running":
        return warn(
            "cloud-init is still running the first boot",
            "the server booted minutes ago; wait for it",
            "cloud-init status --wait",
            "server",
        )

    if status == "error" or errors or facts.get("status_rc") not in (0, 2):
        detail = errors[0] if errors else fields.get("detail") or "no detail"
        count = facts.get("result_error_count") or len(errors) or 1
        return fail(
            f"cloud-init status {status}, {count} errors; first: {detail}",
            "a step of the first boot failed; later steps may be missing",
            fix,
            "server",
        )

    if status != "done":
        return warn(
            f"cloud-init status {status}",
            "cloud-init did not run on this boot, so the server may lack the first-boot setup",
            "cloud-init status --long",
            "server",
        )
    return ok("cloud-init status done, no errors")


def bootstrap(inputs: Inputs) -> CheckResult:
    marker = inputs.facts.get("bootstrap") or {}
    cloud = ((inputs.facts.get("cloud_init") or {}).get("status") or {}).get("status")
    path = layout.BOOTSTRAP_DONE_MARKER
    fix = f"tail -n 50 {CLOUD_INIT_LOG}; after fixing the reason: {RERUN_BOOTSTRAP}"
    if not marker.get("exists"):
        if cloud == "running":
            return warn(f"{path} not written yet; cloud-init is still running", "", "", "")
        return fail(
            f"{path} is missing",
            "the bootstrap script did not run to its end",
            fix,
            "server",
        )

    result = marker.get("result")
    if result == "failed":
        return fail(
            f"bootstrap failed: {marker.get('reason') or 'no reason recorded'}",
            "a step of the bootstrap script stopped it",
            fix,
            "server",
        )

    if result != "done":
        return warn(
            f"{path} does not record a result ({marker.get('content') or 'empty'})",
            "an older bootstrap or a hand-made marker",
        )
    return ok(f"bootstrap done (Caddy {marker.get('caddy_version') or '?'})")


def failed_units(inputs: Inputs) -> CheckResult:
    facts = inputs.facts.get("failed_units") or {}
    if "units" not in facts:
        return skip(f"failed units not listed: {facts.get('error') or probe_error(facts)}")

    others = [name for name in facts["units"] if name not in _COVERED_UNITS]
    state = (inputs.facts.get("system") or {}).get("state") or "?"
    if others:
        return warn(
            f"failed units: {', '.join(others)} (system {state})",
            "units outside the registry failed; they may hold back updates or logins",
            f"systemctl status {others[0]}",
            "server",
        )
    return ok(f"no other failed units (system {state})")


def change_lock(inputs: Inputs) -> CheckResult:
    lock = inputs.facts.get("lock") or {}
    if not lock.get("exists"):
        return ok("no change in progress")

    owner = lock.get("owner")
    if isinstance(owner, dict) and owner.get("operator"):
        holder = (
            f"{owner['operator']} (task {owner.get('task', '?')}, pid {owner.get('pid', '?')}) "
            f"since {owner.get('since', '?')}"
        )
    elif isinstance(owner, str):
        holder = f"an owner file reading {owner!r}"
    else:
        holder = "an unknown owner (no owner file)"

    age = (inputs.facts.get("started_at") or 0) - (lock.get("mtime") or 0)
    return warn(
        f"{layout.LOCK_DIR} held by {holder}, {duration(age)} old",
        "another toolkit run is changing the server, or one died without releasing the lock",
        "if that run died, repeat its task with --break-lock",
        "local",
    )


def reboot(inputs: Inputs) -> CheckResult:
    facts = inputs.facts.get("reboot") or {}
    if not facts.get("required"):
        return ok("no reboot pending")

    packages = ", ".join(facts.get("packages") or []) or "updated packages"
    return warn(
        f"a reboot is pending for {packages}",
        "unattended upgrades installed updates that take effect only after a reboot",
        "systemctl reboot",
        "server",
    )
