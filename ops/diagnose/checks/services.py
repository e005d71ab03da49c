"""Checks of zot, Caddy and podman auto-update."""

from __future__ import annotations

import stat

from ... import layout
from ..result import CheckResult, Inputs, fail, ok, skip, warn
from .common import (
    SET_LOGIN,
    SET_S3_CREDENTIALS,
    UPGRADE_CADDY,
    logs,
    probe_error,
    restart,
    restarts,
    rewrite,
    unit,
    unit_state,
)

# A unit that systemd restarted this often since it last started is crash-looping.
RESTART_WARNING = 3


def zot_service(inputs: Inputs) -> CheckResult:
    facts = inputs.facts
    properties = unit(facts, layout.ZOT_UNIT)
    container = facts.get("container") or {}
    state = unit_state(properties)
    if not properties:
        return fail(
            f"{layout.ZOT_UNIT} state unknown: {(facts.get('units') or {}).get('error', '?')}",
            "systemctl could not be queried on the server",
            "systemctl status",
            "server",
        )

    if properties.get("LoadState") == "not-found":
        return fail(
            f"{layout.ZOT_UNIT} is not installed",
            f"the bootstrap did not write {layout.ZOT_UNIT_PATH}",
            rewrite(layout.ZOT_UNIT_PATH),
            "local",
        )

    active = properties.get("ActiveState")
    if active != "active" and properties.get("ConditionResult") == "no":
        missing = [
            path
            for path, key in (
                (layout.ZOT_CREDENTIALS, "credentials"),
                (layout.ZOT_HTPASSWD, "htpasswd"),
            )
            if not (facts.get(key) or {}).get("exists")
        ]
        fix = SET_S3_CREDENTIALS if layout.ZOT_CREDENTIALS in missing else SET_LOGIN
        return fail(
            f"{layout.ZOT_UNIT} was skipped by systemd: {', '.join(missing) or 'a'} "
            "file it requires is missing",
            "the unit starts only when the S3 credentials and the htpasswd file exist",
            fix,
            "local",
        )

    if active == "inactive" and properties.get("Result") == "success":
        return fail(
            f"{layout.ZOT_UNIT} is {state}",
            "the unit was stopped, or never started since boot",
            restart("zot"),
            "local",
        )

    if active != "active":
        count = restarts(properties)
        return fail(
            f"{layout.ZOT_UNIT} is {state}" + (f" after {count} restarts" if count else ""),
            "the zot container exits at start; its log names the reason "
            "(often S3 access, a config error or the image pull)",
            f"{logs('zot')}; after fixing the reason: {restart('zot')}",
            "local",
        )

    if not container.get("found"):
        detail = container.get("error") or probe_error(container) or "no such container"
        return fail(
            f"{layout.ZOT_UNIT} is active but container {layout.ZOT_CONTAINER} is missing ({detail})",
            "the unit's podman process is up but did not create the container",
            restart("zot"),
            "local",
        )

    if not container.get("running"):
        return fail(
            f"container {layout.ZOT_CONTAINER} is {container.get('status')} "
            f"(exit code {container.get('exit_code')})",
            "the container stopped while the unit still counts as active",
            restart("zot"),
            "local",
        )

    count = restarts(properties)
    evidence = (
        f"{layout.ZOT_UNIT} {state} since {properties.get('ActiveEnterTimestamp') or '?'}; "
        f"container {container.get('status')}, {count} unit restarts"
    )

    if count >= RESTART_WARNING:
        return warn(
            evidence,
            "systemd restarted zot repeatedly; it crashes now and then",
            logs("zot"),
            "local",
        )
    return ok(evidence)


def zot_http(inputs: Inputs) -> CheckResult:
    reply = inputs.facts.get("zot_http") or {}
    where = f"{layout.ZOT_ADDRESS}:{layout.ZOT_PORT}"
    if reply.get("refused"):
        return fail(
            f"connection to {where} refused",
            "nothing listens on zot's port: the container is down or published elsewhere",
            restart("zot"),
            "local",
        )

    if "status" not in reply:
        return fail(
            f"GET http://{where}/v2/ failed: {reply.get('error') or probe_error(reply)}",
            "zot accepts connections but does not answer HTTP in time",
            f"{logs('zot')}; then {restart('zot')}",
            "local",
        )

    status = reply["status"]
    challenge = reply.get("www_authenticate") or ""
    if status == 401 and challenge.lower().startswith("basic"):
        return ok(f"GET /v2/ without credentials: 401, {challenge}")

    if status == 401:
        return warn(
            f"GET /v2/ without credentials: 401 with challenge {challenge or 'none'!r}",
            "zot asks for another authentication scheme than the htpasswd logins the toolkit sets up",
            rewrite(layout.ZOT_CONFIG),
            "local",
        )

    if status == 200:
        return fail(
            "GET /v2/ without credentials: 200, so anyone can pull and push",
            f"authentication is off: {layout.ZOT_CONFIG} has no http.auth.htpasswd section",
            rewrite(layout.ZOT_CONFIG),
            "local",
        )
    return fail(
        f"GET /v2/ without credentials: {status}",
        "zot answers with an error instead of asking for credentials",
        logs("zot"),
        "local",
    )


def zot_config(inputs: Inputs) -> CheckResult:
    config = inputs.facts.get("zot_config") or {}
    verify = inputs.facts.get("zot_verify") or {}
    if not config.get("exists"):
        return fail(
            f"{layout.ZOT_CONFIG} is missing",
            "the bootstrap or deploy did not write zot's configuration",
            rewrite(layout.ZOT_CONFIG),
            "local",
        )

    if config.get("parse_error"):
        return fail(
            f"{layout.ZOT_CONFIG} is not valid JSON: {config['parse_error']}",
            "the file was edited by hand or written incompletely",
            rewrite(layout.ZOT_CONFIG),
            "local",
        )

    if config.get("error") or probe_error(config):
        return fail(
            f"{layout.ZOT_CONFIG} could not be read: {config.get('error') or probe_error(config)}",
            "the probe runs as root and still cannot read the file",
            f"ls -l {layout.ZOT_CONFIG}",
            "server",
        )

    if verify.get("ran") and verify.get("rc") != 0:
        return fail(
            f"zot verify rejected {layout.ZOT_CONFIG}: {verify.get('message')}",
            "zot will not start (or restart) with this configuration",
            rewrite(layout.ZOT_CONFIG),
            "local",
        )

    storage = config.get("storage") or {}
    driver = storage.get("driver") or {}
    problems = []
    if driver.get("name") != "s3":
        problems.append(f"storage driver is {driver.get('name') or 'unset'}, not s3")
    else:
        if "forcepathstyle" not in driver:
            problems.append("forcepathstyle is not set (its default differs between zot versions)")
        endpoint = str(driver.get("regionendpoint") or "")
        if endpoint and "://" not in endpoint:
            problems.append(f"regionendpoint {endpoint} lacks https://")
        expected = inputs.expect.bucket
        if expected and driver.get("bucket") != expected:
            problems.append(f"bucket is {driver.get('bucket')}, settings name {expected}")

    if storage.get("inline_secret_key") or storage.get("inline_access_key"):
        problems.append(f"S3 keys are written in {layout.ZOT_CONFIG}, not in the credentials file")

    port = (config.get("http") or {}).get("port")
    if port is not None and str(port) != str(layout.ZOT_PORT):
        problems.append(f"http.port is {port}, Caddy proxies to {layout.ZOT_PORT}")

    verified = (
        "zot verify passed"
        if verify.get("ran")
        else f"zot verify not run: {verify.get('reason') or 'unknown'}"
    )

    if problems:
        return warn(
            f"{'; '.join(problems)} ({verified})",
            "the configuration differs from what the toolkit writes",
            rewrite(layout.ZOT_CONFIG),
            "local",
        )
    return ok(f"valid JSON, storage s3 bucket {driver.get('bucket')}; {verified}")


def htpasswd(inputs: Inputs) -> CheckResult:
    facts = inputs.facts.get("htpasswd") or {}
    if not facts.get("exists"):
        return fail(
            f"{layout.ZOT_HTPASSWD} is missing",
            "zot.service does not start without its login file",
            SET_LOGIN,
            "local",
        )

    schemes = facts.get("schemes") or {}
    entries = facts.get("entries", 0)
    if not entries:
        return fail(
            f"{layout.ZOT_HTPASSWD} has no logins",
            "nobody can log in to the registry",
            SET_LOGIN,
            "local",
        )

    unsupported = {name: count for name, count in schemes.items() if name != "bcrypt" and count}
    if unsupported:
        listed = ", ".join(f"{count} {name}" for name, count in sorted(unsupported.items()))
        return fail(
            f"{layout.ZOT_HTPASSWD} has {listed} entries besides {schemes.get('bcrypt', 0)} bcrypt",
            "zot accepts bcrypt hashes only, so those users cannot log in "
            "(htpasswd without -B writes Apache MD5)",
            SET_LOGIN,
            "local",
        )

    mode = int(facts.get("mode", "0"), 8)
    if mode & stat.S_IROTH:
        return warn(
            f"{layout.ZOT_HTPASSWD} has mode {facts.get('mode')}: every local user can read the hashes",
            "the file was written without a restrictive mode",
            f"chmod 0600 {layout.ZOT_HTPASSWD}",
            "server",
        )
    return ok(f"{entries} bcrypt logins, mode {facts.get('mode')}")


def caddy_service(inputs: Inputs) -> CheckResult:
    facts = inputs.facts
    caddy = facts.get("caddy") or {}
    binary = caddy.get("binary_file") or {}
    properties = unit(facts, layout.CADDY_UNIT)
    if not binary.get("exists"):
        return fail(
            f"{layout.CADDY_BINARY} is missing",
            "the Caddy download of the bootstrap failed or the binary was removed",
            UPGRADE_CADDY,
            "local",
        )

    mode = int(binary.get("mode", "0"), 8)
    if not mode & stat.S_IXOTH:
        return fail(
            f"{layout.CADDY_BINARY} has mode {binary.get('mode')}; "
            f"user {layout.CADDY_USER} cannot execute it",
            "systemd runs Caddy as an unprivileged user; a self-upgrade can leave the binary 0750",
            f"chmod 0755 {layout.CADDY_BINARY} && systemctl restart {layout.CADDY_UNIT}",
            "server",
        )

    if properties.get("LoadState") == "not-found":
        return fail(
            f"{layout.CADDY_UNIT} is not installed",
            f"the bootstrap did not write {layout.CADDY_UNIT_PATH}",
            rewrite(layout.CADDY_UNIT_PATH),
            "local",
        )

    state = unit_state(properties)
    if properties.get("ActiveState") != "active":
        cause = "Caddy exits at start; its log names the reason (a port in use, the Caddyfile)"
        if properties.get("Result") in (None, "", "success") and inputs.expect.tls == "acme":
            cause = (
                "the bootstrap starts Caddy only once the domain resolves to this server, "
                "so that no certificate request is wasted"
            )
        return fail(
            f"{layout.CADDY_UNIT} is {state}",
            cause,
            f"{logs('caddy')}; after fixing the reason: {restart('caddy')}",
            "local",
        )

    count = restarts(properties)
    evidence = f"{layout.CADDY_UNIT} {state}, Caddy {caddy.get('version') or '?'}, {count} restarts"
    if count >= RESTART_WARNING:
        return warn(evidence, "systemd restarted Caddy repeatedly", logs("caddy"), "local")
    return ok(evidence)


def caddy_config(inputs: Inputs) -> CheckResult:
    caddy = inputs.facts.get("caddy") or {}
    if not (caddy.get("caddyfile") or {}).get("exists"):
        return fail(
            f"{layout.CADDYFILE} is missing",
            "the bootstrap or deploy did not write the Caddyfile",
            rewrite(layout.CADDYFILE),
            "local",
        )

    validate = caddy.get("validate")
    if validate is None:
        return skip(f"caddy validate not run: {layout.CADDY_BINARY} is missing")

    command = f"{layout.CADDY_BINARY} validate --config {layout.CADDYFILE} --adapter caddyfile"
    if validate.get("rc") != 0:
        return fail(
            f"caddy validate failed: {validate.get('message') or 'no message'}",
            "the Caddyfile has an error, so the next restart or reload of Caddy fails",
            f"fix the line named above and check with: {command}; or put the toolkit's "
            f"version back: {rewrite(layout.CADDYFILE)}",
            "local",
        )
    return ok(f"caddy validate passed (as user {validate.get('user')})")


def auto_update(inputs: Inputs) -> CheckResult:
    facts = inputs.facts
    timer = unit(facts, layout.AUTOUPDATE_TIMER)
    service = unit(facts, layout.AUTOUPDATE_SERVICE)
    container = facts.get("container") or {}
    enable = f"systemctl enable --now {layout.AUTOUPDATE_TIMER}"
    if not timer or timer.get("LoadState") == "not-found":
        return fail(
            f"{layout.AUTOUPDATE_TIMER} is not installed",
            "the podman package brings the timer; podman is missing or too old",
            "apt-get install podman",
            "server",
        )

    if timer.get("ActiveState") != "active":
        return fail(
            f"{layout.AUTOUPDATE_TIMER} is {unit_state(timer)}",
            "the timer is stopped, so zot's image is never updated",
            enable,
            "server",
        )

    if timer.get("UnitFileState") not in ("enabled", "static", "enabled-runtime", "alias"):
        return fail(
            f"{layout.AUTOUPDATE_TIMER} runs but is {timer.get('UnitFileState')}",
            "the timer will not start again after a reboot",
            enable,
            "server",
        )

    if not container.get("found"):
        return skip(f"container {layout.ZOT_CONTAINER} not found; its labels cannot be checked")

    labels = container.get("labels") or {}
    policy = labels.get(layout.AUTOUPDATE_LABEL)
    if policy not in ("registry", "image", "local"):
        return fail(
            f"container {layout.ZOT_CONTAINER} lacks {layout.AUTOUPDATE_LABEL}=registry "
            f"(found {policy!r})",
            "podman auto-update skips containers without the label",
            rewrite(layout.ZOT_UNIT_PATH),
            "local",
        )

    if not labels.get("PODMAN_SYSTEMD_UNIT"):
        return fail(
            f"container {layout.ZOT_CONTAINER} has no PODMAN_SYSTEMD_UNIT label",
            "podman auto-update restarts a container through its unit; the unit must create "
            "the container itself (podman run --replace with PODMAN_SYSTEMD_UNIT set)",
            rewrite(layout.ZOT_UNIT_PATH),
            "local",
        )

    image = container.get("image_name") or ""
    first = image.split("/", 1)[0]
    if "/" not in image or not ("." in first or ":" in first or first == "localhost"):
        return fail(
            f"image {image!r} is not fully qualified",
            "podman auto-update needs a registry host in the image name",
            rewrite(layout.ZOT_UNIT_PATH),
            "local",
        )

    dry_run = facts.get("auto_update") or {}
    last = service.get("Result")
    evidence = (
        f"timer active, label {layout.AUTOUPDATE_LABEL}={policy}, image {image}, "
        f"last run {last or 'never'}"
    )

    failed_entries = [
        entry for entry in dry_run.get("entries") or [] if entry.get("updated") == "failed"
    ]
    if last and last != "success":
        return warn(
            evidence,
            f"the last run of {layout.AUTOUPDATE_SERVICE} failed",
            f"journalctl -u {layout.AUTOUPDATE_SERVICE} -n 50",
            "server",
        )

    if dry_run.get("rc") not in (None, 0) or failed_entries:
        return warn(
            f"{evidence}; podman auto-update --dry-run: {dry_run.get('error') or 'failed'}",
            "the next automatic update will fail (registry unreachable or image missing)",
            "podman auto-update --dry-run",
            "server",
        )

    pending = [entry for entry in dry_run.get("entries") or [] if entry.get("updated") == "pending"]
    if pending:
        evidence += "; an update is pending"
    return ok(evidence)
