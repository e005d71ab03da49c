"""Collect the raw facts that `inv diagnose` judges, in one run on a server.

The toolkit sends this file over SSH as the standard input of `python3 -`, with
one JSON argument that names the domain, paths, units and ports to look at
(built from ops.layout by ops.diagnose.remote). It prints one JSON document and
judges nothing: ops.diagnose.checks does that on the operator's machine.

It uses the Python 3 standard library only, because a fresh Debian 12 server
has python3 and nothing else of ours. It changes nothing on the server, apart
from what `caddy validate` writes into Caddy's own storage while provisioning.

Secrets stay on the server. For credentials it reports whether they are set,
and the HTTP status and S3 error code of a request signed with them. Log lines
and error texts pass through redact() before they are reported.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import hashlib
import hmac
import http.client
import json
import os
import pwd
import re
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse

PROBE_VERSION = 1
MASK = "********"

# Every network request and command is bounded so the whole probe ends within
# a few minutes even when every tool hangs.
HTTP_TIMEOUT = 5.0
COMMAND_TIMEOUT = 15.0
SLOW_COMMAND_TIMEOUT = 40.0
# Enough output for any status listing; longer output is cut and marked.
MAX_OUTPUT = 64 * 1024
MAX_SAMPLE = 240
# journalctl lines and log-file bytes read per source.
MAX_JOURNAL_LINES = 20000
MAX_LOG_BYTES = 4 * 1024 * 1024
# Threads that collect sections at the same time; most of them wait on a command.
PROBE_WORKERS = 6

ERROR_LEVELS = {"error", "err", "fatal", "panic", "dpanic", "crit", "critical", "alert", "emerg"}

UNIT_PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "Result",
    "NRestarts",
    "ExecMainStatus",
    "ConditionResult",
    "ActiveEnterTimestamp",
    "StateChangeTimestamp",
    "LastTriggerUSec",
)

# Credentials that may show up in log lines or error messages, each with its replacement.
_SECRET_PATTERNS = (
    (re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]{6,}"), r"\1 " + MASK),
    (
        re.compile(r'(?i)("?(?:proxy-)?authorization"?\s*[:=]\s*\[?\s*)("[^"]*"|[^\s,\]}]+)'),
        r"\1" + MASK,
    ),
    (
        re.compile(
            r'(?i)("?[a-z_-]*(?:password|passwd|secret|token|accesskey)[a-z_-]*"?\s*[:=]\s*)'
            r'("[^"]*"|[^\s,}]+)'
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(?i)(x-amz-signature=|signature=)[0-9a-f]+"), r"\1" + MASK),
    (re.compile(r"(?i)(x-amz-credential=|credential=)[^\s&,/]+"), r"\1" + MASK),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b"), MASK),
)


class Redactor:
    """Masks known secret values and credential patterns in text that leaves the server."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: str | None) -> None:
        # Very short values would mask ordinary words and prove nothing.
        if value and len(value) >= 4:
            self.values.add(value)

    def __call__(self, text: str, limit: int = MAX_SAMPLE) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, MASK)
        for pattern, replacement in _SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        text = " ".join(text.split())
        if len(text) > limit:
            text = text[: limit - 3] + "..."
        return text


redact = Redactor()


def describe_error(error: BaseException) -> str:
    """Return 'Type: message' of an exception, redacted and on one line."""
    message = str(error) or error.__class__.__name__
    return redact(f"{error.__class__.__name__}: {message}")


def clip(text: str) -> str:
    if len(text) > MAX_OUTPUT:
        return text[:MAX_OUTPUT] + f"\n[output cut at {MAX_OUTPUT} characters]"
    return text


def run(argv, timeout=COMMAND_TIMEOUT, user=None, env=None):
    """Run ARGV without a shell; return rc, stdout and stderr, or an error text."""
    environment = dict(os.environ)
    environment.update({"LC_ALL": "C", "LANG": "C", "SYSTEMD_PAGER": "", "PAGER": "cat"})
    if env:
        environment.update(env)
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=environment,
            user=user,
            check=False,
        )
    except FileNotFoundError:
        return {"rc": None, "error": f"{argv[0]} not found"}
    except subprocess.TimeoutExpired:
        return {"rc": None, "error": f"{argv[0]} timed out after {timeout:.0f} s"}
    except OSError as error:
        return {"rc": None, "error": describe_error(error)}
    return {"rc": proc.returncode, "stdout": clip(proc.stdout), "stderr": clip(proc.stderr)}


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def file_facts(path: str) -> dict:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return {"exists": False}
    except OSError as error:
        return {"exists": None, "error": describe_error(error)}
    return {
        "exists": True,
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "uid": info.st_uid,
        "gid": info.st_gid,
        "size": info.st_size,
        "mtime": info.st_mtime,
    }


def parse_env_text(text: str) -> dict:
    """Parse KEY=VALUE lines as systemd's EnvironmentFile and podman's --env-file read them."""
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


# ---------------------------------------------------------------------------
# systemd


def parse_properties(text: str) -> list[dict]:
    """Split `systemctl show` output into one dict per unit (blocks end at a blank line)."""
    blocks, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    if current:
        blocks.append(current)
    return blocks


def collect_units(units: list[str]) -> dict:
    result = run(["systemctl", "show", "--no-pager", "-p", ",".join(UNIT_PROPERTIES), *units])
    if result["rc"] is None:
        return {"error": result["error"]}
    blocks = parse_properties(result["stdout"])
    facts = {}
    for unit, block in zip(units, blocks, strict=False):
        facts[unit] = block
    if len(blocks) != len(units):
        facts["error"] = last_line(result["stderr"]) or "systemctl show returned fewer units"
    return facts


def collect_failed_units() -> dict:
    result = run(["systemctl", "list-units", "--state=failed", "--plain", "--no-legend"])
    if result["rc"] is None:
        return {"error": result["error"]}
    names = [line.split()[0] for line in result["stdout"].splitlines() if line.split()]
    return {"units": names}


def collect_system_state() -> dict:
    state = run(["systemctl", "is-system-running"])
    virt = run(["systemd-detect-virt", "--container"])
    return {
        "state": (state.get("stdout") or "").strip() or state.get("error"),
        "container": (virt.get("stdout") or "").strip() or "none",
    }


# ---------------------------------------------------------------------------
# podman


def collect_container(name: str) -> dict:
    result = run(["podman", "container", "inspect", name])
    if result["rc"] is None:
        return {"found": None, "error": result["error"]}
    if result["rc"] != 0:
        message = last_line(result["stderr"])
        if "no such" in message.lower():
            return {"found": False}
        return {"found": None, "error": redact(message)}
    try:
        data = json.loads(result["stdout"])[0]
    except (ValueError, IndexError, TypeError) as error:
        return {"found": None, "error": describe_error(error)}
    state = data.get("State") or {}
    config = data.get("Config") or {}
    labels = config.get("Labels") or {}
    # Config.Env contains the S3 credentials, so only named, non-secret fields leave here.
    return {
        "found": True,
        "status": state.get("Status"),
        "running": bool(state.get("Running")),
        "exit_code": state.get("ExitCode"),
        "error": redact(state.get("Error") or ""),
        "started_at": state.get("StartedAt"),
        "restart_count": data.get("RestartCount"),
        "image_name": data.get("ImageName") or config.get("Image"),
        "path": data.get("Path"),
        "labels": {
            key: value
            for key, value in labels.items()
            if key.startswith("io.containers.") or key == "PODMAN_SYSTEMD_UNIT"
        },
        "mounts": [
            {"source": mount.get("Source"), "destination": mount.get("Destination")}
            for mount in data.get("Mounts") or []
        ],
        "ports": [
            {
                "container_port": port,
                "host_ip": binding.get("HostIp"),
                "host_port": binding.get("HostPort"),
            }
            for port, bindings in ((data.get("NetworkSettings") or {}).get("Ports") or {}).items()
            for binding in bindings or []
        ],
    }


def collect_auto_update_dry_run() -> dict:
    """List what `podman auto-update` would do; it queries each image's registry, changes nothing."""
    result = run(
        ["podman", "auto-update", "--dry-run", "--format", "json"], timeout=SLOW_COMMAND_TIMEOUT
    )
    if result["rc"] is None:
        return {"rc": None, "error": result["error"]}
    facts = {"rc": result["rc"]}
    if result["rc"] != 0:
        facts["error"] = redact(last_line(result["stderr"]))
        return facts
    try:
        entries = json.loads(result["stdout"] or "[]") or []
    except ValueError as error:
        facts["error"] = describe_error(error)
        return facts
    facts["entries"] = [
        {
            key.lower(): entry.get(key)
            for key in ("Unit", "ContainerName", "Image", "Policy", "Updated")
        }
        for entry in entries
        if isinstance(entry, dict)
    ]
    return facts


def collect_zot_verify(container: dict, config_path: str, container_name: str) -> dict:
    """Run `zot verify` inside the running container, when its entrypoint is zot."""
    if not container.get("running"):
        return {"ran": False, "reason": "container not running"}
    entrypoint = container.get("path") or ""
    if os.path.basename(entrypoint) != "zot":
        return {"ran": False, "reason": f"container entrypoint is {entrypoint or 'unknown'}"}
    inner_path = None
    for mount in container.get("mounts") or []:
        source, destination = mount.get("source") or "", mount.get("destination") or ""
        if source == config_path:
            inner_path = destination
        elif source and config_path.startswith(source.rstrip("/") + "/"):
            inner_path = destination.rstrip("/") + config_path[len(source.rstrip("/")) :]
    if inner_path is None:
        return {"ran": False, "reason": f"{config_path} is not mounted into the container"}
    result = run(
        ["podman", "exec", container_name, entrypoint, "verify", inner_path],
        timeout=SLOW_COMMAND_TIMEOUT,
    )
    if result["rc"] is None:
        return {"ran": False, "reason": result["error"]}
    output = result["stdout"] + "\n" + result["stderr"]
    return {"ran": True, "rc": result["rc"], "message": redact(last_line(output))}


# ---------------------------------------------------------------------------
# HTTP and TLS


def http_request(address, port, host, path, server_name=None, verify=False):
    """Send GET PATH to ADDRESS:PORT with Host HOST, over TLS when SERVER_NAME is set.

    The connection goes to ADDRESS whatever HOST resolves to, the way
    `curl --resolve` does, so the server is asked for its own name locally.
    """
    facts = {"url": f"{'https' if server_name else 'http'}://{host}{path}"}
    started = time.monotonic()
    try:
        sock = socket.create_connection((address, port), timeout=HTTP_TIMEOUT)
    except OSError as error:
        facts["error"] = describe_error(error)
        facts["refused"] = isinstance(error, ConnectionRefusedError)
        return facts
    try:
        if server_name:
            context = ssl.create_default_context()
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=server_name)
            facts["tls_version"] = sock.version()
            der = sock.getpeercert(binary_form=True)
            if der:
                facts["certificate_der"] = base64.b64encode(der).decode("ascii")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: zot-hetzner-diagnose\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(request.encode("ascii"))
        response = http.client.HTTPResponse(sock)
        response.begin()
        facts["status"] = response.status
        facts["www_authenticate"] = response.getheader("WWW-Authenticate")
        facts["location"] = response.getheader("Location")
        facts["server"] = response.getheader("Server")
        response.read(4096)
    except ssl.SSLCertVerificationError as error:
        facts["verify_error"] = redact(error.verify_message or str(error))
    except (OSError, http.client.HTTPException) as error:
        facts["error"] = describe_error(error)
    finally:
        sock.close()
    facts["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    return facts


def collect_tls_verification(address, port, server_name) -> dict:
    """Verify the certificate that ADDRESS:PORT presents for SERVER_NAME against the system CAs."""
    try:
        sock = socket.create_connection((address, port), timeout=HTTP_TIMEOUT)
    except OSError as error:
        return {"verified": None, "error": describe_error(error)}
    try:
        context = ssl.create_default_context()
        with context.wrap_socket(sock, server_hostname=server_name):
            return {"verified": True}
    except ssl.SSLCertVerificationError as error:
        return {"verified": False, "error": redact(error.verify_message or str(error))}
    except OSError as error:
        return {"verified": None, "error": describe_error(error)}
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# Caddy


def collect_caddy(params: dict) -> dict:
    caddy = params["caddy"]
    binary = caddy["binary"]
    facts = {"binary": binary, "binary_file": file_facts(binary)}
    facts["caddyfile"] = file_facts(caddy["caddyfile"])
    if not facts["binary_file"].get("exists"):
        return facts
    version = run([binary, "version"])
    facts["version"] = (version.get("stdout") or "").split(" ")[0].strip() or version.get("error")
    facts["validate"] = validate_caddyfile(binary, caddy["caddyfile"], caddy["user"])
    return facts


def validate_caddyfile(binary: str, caddyfile: str, user: str) -> dict:
    """Run `caddy validate` as Caddy's service user so it reads the storage the service uses."""
    argv = [binary, "validate", "--config", caddyfile, "--adapter", "caddyfile"]
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        account = None
    if account is not None and os.geteuid() == 0:
        result = run(
            argv,
            timeout=SLOW_COMMAND_TIMEOUT,
            user=account.pw_uid,
            env={"HOME": account.pw_dir, "USER": user},
        )
        runs_as = user
    else:
        # Without the service user, a throwaway storage keeps root's home clean.
        with tempfile.TemporaryDirectory(prefix="zot-hetzner-diagnose-") as scratch:
            result = run(
                argv,
                timeout=SLOW_COMMAND_TIMEOUT,
                env={"HOME": scratch, "XDG_DATA_HOME": scratch, "XDG_CONFIG_HOME": scratch},
            )
        runs_as = pwd.getpwuid(os.geteuid()).pw_name
    if result["rc"] is None:
        return {"rc": None, "message": result["error"], "user": runs_as}
    message = last_line(result["stderr"]) or last_line(result["stdout"])
    # Caddy logs JSON lines; keep the message and error fields of the last one.
    if message.startswith("{"):
        try:
            entry = json.loads(message)
            message = ": ".join(str(entry[key]) for key in ("msg", "error") if entry.get(key))
        except ValueError:
            pass
    return {"rc": result["rc"], "message": redact(message, limit=400), "user": runs_as}


# ---------------------------------------------------------------------------
# Network


def collect_addresses() -> dict:
    result = run(["ip", "-j", "addr", "show"])
    if result["rc"] != 0:
        return {"error": result.get("error") or redact(last_line(result.get("stderr", "")))}
    try:
        interfaces = json.loads(result["stdout"])
    except ValueError as error:
        return {"error": describe_error(error)}
    addresses = []
    for interface in interfaces:
        for info in interface.get("addr_info") or []:
            addresses.append(
                {
                    "interface": interface.get("ifname"),
                    "family": info.get("family"),
                    "address": info.get("local"),
                    "prefixlen": info.get("prefixlen"),
                    "scope": info.get("scope"),
                }
            )
    return {"addresses": addresses}


def collect_resolution(domain: str) -> dict:
    try:
        infos = socket.getaddrinfo(domain, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        return {"addresses": [], "error": describe_error(error)}
    return {"addresses": sorted({info[4][0] for info in infos})}


def collect_command_text(argv) -> dict:
    result = run(argv)
    if result["rc"] is None:
        return {"rc": None, "error": result["error"]}
    return {"rc": result["rc"], "output": result["stdout"], "stderr": redact(result["stderr"])}


# ---------------------------------------------------------------------------
# zot configuration, logins and S3


def collect_zot_config(path: str) -> dict:
    facts = file_facts(path)
    if not facts.get("exists"):
        return facts
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except ValueError as error:
        # JSONDecodeError names line and column, never the file's content.
        facts["parse_error"] = f"line {error.lineno} column {error.colno}: {error.msg}"
        return facts
    except OSError as error:
        facts["error"] = describe_error(error)
        return facts
    if not isinstance(config, dict):
        facts["parse_error"] = "the top level is not a JSON object"
        return facts
    storage = config.get("storage") or {}
    driver = storage.get("storageDriver") or {}
    http_section = config.get("http") or {}
    auth = http_section.get("auth") or {}
    for key in ("accesskey", "secretkey"):
        redact.add(driver.get(key) if isinstance(driver.get(key), str) else None)
    facts["storage"] = {
        "root_directory": storage.get("rootDirectory"),
        "driver": {
            key: driver.get(key)
            for key in (
                "name",
                "bucket",
                "region",
                "regionendpoint",
                "rootdirectory",
                "secure",
                "skipverify",
                "forcepathstyle",
            )
            if key in driver
        },
        "inline_access_key": bool(driver.get("accesskey")),
        "inline_secret_key": bool(driver.get("secretkey")),
    }
    facts["http"] = {
        "address": http_section.get("address"),
        "port": http_section.get("port"),
        "external_url": http_section.get("externalUrl"),
        "htpasswd_path": (auth.get("htpasswd") or {}).get("path"),
        "compat": http_section.get("compat"),
    }
    facts["log"] = {key: (config.get("log") or {}).get(key) for key in ("level", "output", "audit")}
    return facts


def collect_htpasswd(path: str) -> dict:
    facts = file_facts(path)
    if not facts.get("exists"):
        return facts
    schemes = {"bcrypt": 0, "apr1": 0, "sha1": 0, "other": 0}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError as error:
        facts["error"] = describe_error(error)
        return facts
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        _, _, digest = line.partition(":")
        if digest.startswith(("$2a$", "$2b$", "$2y$")):
            schemes["bcrypt"] += 1
        elif digest.startswith("$apr1$"):
            schemes["apr1"] += 1
        elif digest.startswith("{SHA}"):
            schemes["sha1"] += 1
        else:
            schemes["other"] += 1
    facts["schemes"] = schemes
    facts["entries"] = sum(schemes.values())
    return facts


def collect_credentials(path: str) -> tuple[dict, dict]:
    """Return the facts about the credentials file, and the values for the S3 request."""
    facts = file_facts(path)
    values = {}
    if facts.get("exists"):
        try:
            with open(path, encoding="utf-8") as handle:
                values = parse_env_text(handle.read())
        except (OSError, UnicodeDecodeError) as error:
            facts["error"] = describe_error(error)
    for key, value in values.items():
        if any(word in key.upper() for word in ("KEY", "SECRET", "TOKEN", "PASSWORD")):
            redact.add(value)
    facts["access_key_present"] = bool(values.get("AWS_ACCESS_KEY_ID"))
    facts["secret_key_present"] = bool(values.get("AWS_SECRET_ACCESS_KEY"))
    facts["keys"] = sorted(values)
    return facts, values


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def _quote(value: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(value, safe=safe)


def signed_s3_request(method, endpoint, bucket, region, path_style, query, access_key, secret_key):
    """Build the URL and headers of an S3 request signed with AWS Signature Version 4."""
    parsed = urllib.parse.urlsplit(endpoint)
    host = parsed.netloc
    base_path = parsed.path.rstrip("/")
    if path_style:
        canonical_path = f"{base_path}/{_quote(bucket)}"
    else:
        host = f"{bucket}.{host}"
        canonical_path = f"{base_path}/"
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(b"").hexdigest()
    canonical_query = "&".join(
        f"{_quote(key)}={_quote(value)}" for key, value in sorted(query.items())
    )
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed_headers = ";".join(sorted(headers))
    canonical_headers = "".join(f"{name}:{headers[name]}\n" for name in sorted(headers))
    canonical_request = "\n".join(
        [method, canonical_path, canonical_query, canonical_headers, signed_headers, payload_hash]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    signing_key = _sign(("AWS4" + secret_key).encode("utf-8"), day)
    for part in (region, "s3", "aws4_request"):
        signing_key = _sign(signing_key, part)
    signature = hmac.new(signing_key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return parsed.scheme, host, canonical_path + "?" + canonical_query, headers


def collect_s3(config: dict, credentials: dict) -> dict:
    """List at most one key under zot's root directory, signed with the server's credentials."""
    driver = (config.get("storage") or {}).get("driver") or {}
    if driver.get("name") != "s3":
        return {"attempted": False, "reason": f"storage driver is {driver.get('name') or 'unset'}"}
    access_key = credentials.get("AWS_ACCESS_KEY_ID") or ""
    secret_key = credentials.get("AWS_SECRET_ACCESS_KEY") or ""
    if not (access_key and secret_key):
        return {"attempted": False, "reason": "credentials missing"}
    endpoint = driver.get("regionendpoint") or ""
    bucket = driver.get("bucket") or ""
    region = driver.get("region") or "us-east-1"
    if not endpoint or not bucket:
        return {"attempted": False, "reason": "regionendpoint or bucket missing in the config"}
    secure = driver.get("secure", True) is not False
    if "://" not in endpoint:
        endpoint = ("https://" if secure else "http://") + endpoint
    prefix = (driver.get("rootdirectory") or "").lstrip("/")
    query = {"list-type": "2", "max-keys": "1", "prefix": prefix}
    path_style = driver.get("forcepathstyle") is True
    scheme, host, target, headers = signed_s3_request(
        "GET", endpoint, bucket, region, path_style, query, access_key, secret_key
    )
    facts = {"attempted": True, "endpoint_host": urllib.parse.urlsplit(endpoint).netloc}
    facts["path_style"] = path_style
    started = time.monotonic()
    if scheme == "https":
        context = ssl.create_default_context()
        if driver.get("skipverify") is True:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, timeout=HTTP_TIMEOUT * 2, context=context)
    else:
        connection = http.client.HTTPConnection(host, timeout=HTTP_TIMEOUT * 2)
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        body = response.read(64 * 1024).decode("utf-8", "replace")
        facts["status"] = response.status
        # S3 error documents name the access key id and request details: keep the code only.
        match = re.search(r"<Code>([A-Za-z]{1,64})</Code>", body)
        facts["error_code"] = match.group(1) if match else None
    except (OSError, http.client.HTTPException) as error:
        facts["error"] = describe_error(error)
    finally:
        connection.close()
    facts["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    return facts


# ---------------------------------------------------------------------------
# Resources and time


def collect_disks(paths: list[str]) -> dict:
    disks = {}
    for path in paths:
        try:
            usage = os.statvfs(path)
            device = os.stat(path).st_dev
        except FileNotFoundError:
            disks[path] = {"exists": False}
            continue
        except OSError as error:
            disks[path] = {"exists": None, "error": describe_error(error)}
            continue
        disks[path] = {
            "exists": True,
            "device": device,
            "total_bytes": usage.f_blocks * usage.f_frsize,
            "available_bytes": usage.f_bavail * usage.f_frsize,
            "inodes_total": usage.f_files,
            "inodes_available": usage.f_favail,
        }
    return disks


def read_key_values(path: str) -> dict:
    """Read `Key: value unit` (/proc/meminfo) or `key value` (/proc/vmstat) lines."""
    values = {}
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            for line in handle:
                parts = line.replace(":", " ").split()
                if len(parts) >= 2:
                    values[parts[0]] = parts[1]
    except OSError:
        return {}
    return values


def collect_memory() -> dict:
    info = read_key_values("/proc/meminfo")
    vmstat = read_key_values("/proc/vmstat")

    def kib(key):
        value = info.get(key)
        return int(value) * 1024 if value and value.isdigit() else None

    oom = vmstat.get("oom_kill")
    return {
        "total_bytes": kib("MemTotal"),
        "available_bytes": kib("MemAvailable"),
        "swap_total_bytes": kib("SwapTotal"),
        "swap_free_bytes": kib("SwapFree"),
        "oom_kills_since_boot": int(oom) if oom and oom.isdigit() else None,
    }


def collect_uptime() -> float | None:
    try:
        with open("/proc/uptime", encoding="ascii") as handle:
            return float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def collect_timedate() -> dict:
    result = run(["timedatectl", "show"])
    if result["rc"] is None:
        return {"rc": None, "error": result["error"]}
    facts = {"rc": result["rc"]}
    if result["rc"] != 0:
        facts["error"] = redact(last_line(result["stderr"]))
        return facts
    blocks = parse_properties(result["stdout"])
    facts["properties"] = blocks[0] if blocks else {}
    return facts


# ---------------------------------------------------------------------------
# Logs


def message_level(message: str, priority: int | None) -> str | None:
    """Return the log level of one line: JSON 'level', logfmt 'level=', or syslog priority."""
    if message.startswith("{"):
        try:
            entry = json.loads(message)
        except ValueError:
            entry = None
        if isinstance(entry, dict) and isinstance(entry.get("level"), str):
            return entry["level"].lower()
    match = re.search(r"\blevel=\"?(\w+)", message)
    if match:
        return match.group(1).lower()
    if priority is not None and priority <= 3:
        return "error"
    return None


def summarize_message(message: str) -> str:
    """Shorten a JSON log line to its message and error fields."""
    if message.startswith("{"):
        try:
            entry = json.loads(message)
        except ValueError:
            return message
        if isinstance(entry, dict):
            parts = [
                str(entry[key]) for key in ("msg", "message", "error", "err") if entry.get(key)
            ]
            if parts:
                return ": ".join(parts)
    return message


class ErrorTally:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines = 0
        self.errors = 0
        self.sample = None
        self.sample_time = None

    def add(self, message: str, priority: int | None, when: float | None) -> None:
        self.lines += 1
        if message_level(message, priority) in ERROR_LEVELS:
            self.errors += 1
            if self.sample_time is None or (when or 0) >= self.sample_time:
                self.sample = message
                self.sample_time = when or 0

    def facts(self) -> dict:
        return {
            "source": self.source,
            "lines": self.lines,
            "errors": self.errors,
            "sample": redact(summarize_message(self.sample)) if self.sample else None,
            "sample_time": self.sample_time or None,
        }


def journal_errors(unit: str, since: float) -> dict:
    result = run(
        [
            "journalctl",
            "--no-pager",
            "--quiet",
            "--unit",
            unit,
            "--since",
            f"@{int(since)}",
            "--lines",
            str(MAX_JOURNAL_LINES),
            "--output",
            "json",
            "--output-fields",
            "MESSAGE,PRIORITY",
        ],
        timeout=SLOW_COMMAND_TIMEOUT,
    )
    tally = ErrorTally(f"journal {unit}")
    if result["rc"] is None:
        return {"source": tally.source, "error": result["error"]}
    if result["rc"] != 0:
        return {"source": tally.source, "error": redact(last_line(result["stderr"]))}
    for line in result["stdout"].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = entry.get("MESSAGE")
        if isinstance(message, list):
            message = bytes(message).decode("utf-8", "replace")
        if not isinstance(message, str):
            continue
        priority = entry.get("PRIORITY")
        when = entry.get("__REALTIME_TIMESTAMP")
        tally.add(
            message,
            int(priority) if str(priority).isdigit() else None,
            int(when) / 1e6 if str(when).isdigit() else None,
        )
    return tally.facts()


def parse_time(value) -> float | None:
    """Return epoch seconds of an RFC 3339 time (any fraction length) or an epoch number."""
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def read_tail(path: str) -> list[str] | None:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - MAX_LOG_BYTES))
            data = handle.read()
    except FileNotFoundError:
        return None
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > MAX_LOG_BYTES else lines


def file_errors(path: str, since: float) -> dict:
    """Count error lines newer than SINCE in a JSON-lines log file (zot's log)."""
    tally = ErrorTally(path)
    try:
        lines = read_tail(path)
    except OSError as error:
        return {"source": path, "error": describe_error(error)}
    if lines is None:
        return {"source": path, "exists": False}
    for line in lines:
        when = None
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {}
            if isinstance(entry, dict):
                when = parse_time(entry.get("time", entry.get("ts")))
        if when is not None and when < since:
            continue
        tally.add(line, None, when)
    facts = tally.facts()
    facts["exists"] = True
    return facts


def access_log_server_errors(path: str, since: float) -> dict:
    """Count 5xx responses newer than SINCE in Caddy's JSON access log."""
    try:
        lines = read_tail(path)
    except OSError as error:
        return {"source": path, "error": describe_error(error)}
    if lines is None:
        return {"source": path, "exists": False}
    total = server_errors = 0
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        when = parse_time(entry.get("ts"))
        if when is not None and when < since:
            continue
        total += 1
        if isinstance(entry.get("status"), int) and entry["status"] >= 500:
            server_errors += 1
    return {"source": path, "exists": True, "requests": total, "server_errors": server_errors}


def collect_logs(params: dict, now: float) -> dict:
    since = now - params["log_window_seconds"]
    units = params["units"]
    return {
        "window_seconds": params["log_window_seconds"],
        "zot": [journal_errors(units["zot"], since), file_errors(params["zot"]["log"], since)],
        "caddy": [journal_errors(units["caddy"], since)],
        "caddy_access": access_log_server_errors(params["caddy"]["access_log"], since),
    }


# ---------------------------------------------------------------------------
# cloud-init, bootstrap and toolkit state


CLOUD_INIT_RUN_DIR = "/run/cloud-init"


def cloud_init_status_from_files(run_dir: str = CLOUD_INIT_RUN_DIR) -> dict | None:
    """Derive what `cloud-init status` prints from status.json and result.json.

    The rules follow get_status_details() of cloud-init 22.4 (Debian 12), so no
    second Python interpreter with cloud-init's imports starts (about 0.4 s).
    Returns None when status.json is missing or unreadable. The caller then
    runs `cloud-init status`, which also reports whether cloud-init is disabled.
    """
    try:
        with open(os.path.join(run_dir, "status.json"), encoding="utf-8") as handle:
            stages = json.load(handle).get("v1") or {}
    except (OSError, ValueError, AttributeError):
        return None
    running = not os.path.exists(os.path.join(run_dir, "result.json"))
    errors, latest, detail = [], 0, ""
    for key, value in sorted(stages.items()):
        if key == "stage":
            if value:
                running = True
                detail = f"running in stage {value}"
        elif key == "datasource":
            if value:
                detail = str(value)
        elif isinstance(value, dict):
            errors.extend(str(error) for error in value.get("errors") or [])
            start, finished = value.get("start") or 0, value.get("finished") or 0
            if finished == 0 and start != 0:
                running = True
            latest = max(latest, start, finished)
    if errors:
        status, detail = "error", "; ".join(errors)
    elif running:
        status = "running"
    elif latest > 0:
        status = "done"
    else:
        status = "not run"
    return {"status": status, "detail": redact(detail, limit=300), "source": "status.json"}


def cloud_init_status_from_command() -> tuple[int | None, dict]:
    status = run(["cloud-init", "status", "--long"], timeout=SLOW_COMMAND_TIMEOUT)
    if status["rc"] is None:
        return None, {"error": status["error"]}
    # `status: done` and friends; the lines after `detail:` contain the error, if any.
    fields, detail, in_detail = {}, [], False
    for line in status["stdout"].splitlines():
        key, sep, value = line.partition(":")
        if sep and re.fullmatch(r"[a-z_]+", key):
            in_detail = key == "detail"
            fields[key] = redact(value.strip())
            if in_detail and value.strip():
                detail.append(value.strip())
        elif in_detail and line.strip():
            detail.append(line.strip())
    fields["detail"] = redact(" ".join(detail), limit=300)
    fields["source"] = "cloud-init status --long"
    return status["rc"], fields


def collect_cloud_init() -> dict:
    fields = cloud_init_status_from_files()
    if fields is not None:
        # cloud-init 22.4 exits 1 on error and 0 otherwise.
        facts = {"status_rc": 1 if fields["status"] == "error" else 0, "status": fields}
    else:
        rc, fields = cloud_init_status_from_command()
        facts = {"status_rc": rc}
        if rc is None:
            facts["error"] = fields["error"]
        else:
            facts["status"] = fields
    try:
        with open(os.path.join(CLOUD_INIT_RUN_DIR, "result.json"), encoding="utf-8") as handle:
            result = json.load(handle).get("v1") or {}
        errors = result.get("errors") or []
        facts["result_errors"] = [redact(str(error), limit=300) for error in errors[:5]]
        facts["result_error_count"] = len(errors)
    except FileNotFoundError:
        facts["result_errors"] = None
    except (OSError, ValueError, AttributeError) as error:
        facts["result_error"] = describe_error(error)
    facts["boot_finished"] = os.path.exists("/var/lib/cloud/instance/boot-finished")
    return facts


def collect_marker(path: str) -> dict:
    facts = file_facts(path)
    if not facts.get("exists"):
        return facts
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            content = handle.read(4096)
    except OSError as error:
        facts["error"] = describe_error(error)
        return facts
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        facts["result"] = data.get("result")
        facts["reason"] = redact(str(data.get("reason") or ""), limit=300) or None
        facts["caddy_version"] = data.get("caddy_version")
    else:
        facts["result"] = None
        facts["content"] = redact(content, limit=120)
    return facts


def collect_lock(path: str) -> dict:
    """Report the change lock and who holds it (the owner file is JSON; its token stays here)."""
    facts = file_facts(path)
    if not facts.get("exists"):
        return facts
    try:
        with open(os.path.join(path, "owner"), encoding="utf-8", errors="replace") as handle:
            text = handle.read(4096)
    except OSError:
        facts["owner"] = None
        return facts
    try:
        owner = json.loads(text)
    except ValueError:
        owner = None
    if isinstance(owner, dict):
        facts["owner"] = {
            key: redact(str(owner.get(key)), limit=100)
            for key in ("operator", "pid", "task", "since")
            if key in owner
        }
    else:
        facts["owner"] = redact(text.strip(), limit=200) or None
    return facts


def collect_reboot_required() -> dict:
    if not os.path.exists("/run/reboot-required"):
        return {"required": False}
    packages = []
    try:
        with open("/run/reboot-required.pkgs", encoding="utf-8", errors="replace") as handle:
            packages = sorted({line.strip() for line in handle if line.strip()})
    except OSError:
        pass
    return {"required": True, "packages": packages[:10]}


# ---------------------------------------------------------------------------


def section(facts: dict, name: str, collect, *args) -> None:
    """Store COLLECT(*ARGS) under NAME; an unexpected error becomes that section's error."""
    started = time.monotonic()
    try:
        facts[name] = collect(*args)
    except Exception as error:  # one broken probe must not hide the others
        facts[name] = {"probe_error": describe_error(error)}
    facts["timings_ms"][name] = round((time.monotonic() - started) * 1000)


def collect(params: dict, workers: int = PROBE_WORKERS) -> dict:
    """Collect every fact named in PARAMS and return them as one JSON-ready dict.

    Most sections wait on a command or a socket, so they run on WORKERS
    threads. A section that needs another's facts runs after it in the same
    task; each task writes only its own keys.
    """
    now = time.time()
    domain = params["domain"]
    zot = params["zot"]
    caddy = params["caddy"]
    facts = {
        "probe_version": PROBE_VERSION,
        "started_at": now,
        "hostname": socket.gethostname(),
        "uid": os.geteuid(),
        "python": sys.version.split()[0],
        "uptime_seconds": collect_uptime(),
        "timings_ms": {},
    }
    # The files with secrets are read first, so their values join the redactor
    # before any log line or error text is collected.
    credentials_facts, credentials = collect_credentials(zot["credentials"])
    facts["credentials"] = credentials_facts
    section(facts, "zot_config", collect_zot_config, zot["config"])

    def container_then_verify() -> None:
        section(facts, "container", collect_container, params["container"])
        section(
            facts,
            "zot_verify",
            collect_zot_verify,
            facts["container"],
            zot["config"],
            params["container"],
        )

    zot_host = f"{zot['address']}:{zot['port']}"
    https_port, http_port = caddy["https_port"], caddy["http_port"]
    tasks = [
        container_then_verify,
        lambda: section(facts, "s3", collect_s3, facts["zot_config"], credentials),
        lambda: section(facts, "system", collect_system_state),
        lambda: section(facts, "units", collect_units, list(params["units"].values())),
        lambda: section(facts, "failed_units", collect_failed_units),
        lambda: section(facts, "auto_update", collect_auto_update_dry_run),
        lambda: section(facts, "htpasswd", collect_htpasswd, zot["htpasswd"]),
        lambda: section(
            facts, "zot_http", http_request, zot["address"], zot["port"], zot_host, "/v2/"
        ),
        lambda: section(facts, "caddy", collect_caddy, params),
        lambda: section(
            facts, "caddy_https", http_request, "127.0.0.1", https_port, domain, "/v2/", domain
        ),
        lambda: section(
            facts, "caddy_tls_verify", collect_tls_verification, "127.0.0.1", https_port, domain
        ),
        lambda: section(facts, "caddy_http", http_request, "127.0.0.1", http_port, domain, "/v2/"),
        lambda: section(facts, "addresses", collect_addresses),
        lambda: section(facts, "resolution", collect_resolution, domain),
        lambda: section(facts, "ufw", collect_command_text, ["ufw", "status", "verbose"]),
        lambda: section(facts, "listening", collect_command_text, ["ss", "-H", "-t", "-l", "-n"]),
        lambda: section(facts, "disks", collect_disks, params["disk_paths"]),
        lambda: section(facts, "memory", collect_memory),
        lambda: section(facts, "timedate", collect_timedate),
        lambda: section(facts, "logs", collect_logs, params, now),
        lambda: section(facts, "cloud_init", collect_cloud_init),
        lambda: section(facts, "bootstrap", collect_marker, params["bootstrap_marker"]),
        lambda: section(facts, "lock", collect_lock, params["lock_dir"]),
        lambda: section(facts, "reboot", collect_reboot_required),
    ]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()
    facts["finished_at"] = time.time()
    return facts


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python3 probe.py PARAMS_JSON\n")
        return 2
    params = json.loads(argv[1])
    json.dump(collect(params), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
