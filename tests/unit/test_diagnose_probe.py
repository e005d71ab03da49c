"""The diagnose probe, run for real on this machine against local files and servers.

Paths come from the probe's parameters, so the tests point them into a
temporary folder. The zot and Caddy endpoints are small servers on
127.0.0.1; the S3 request goes to the moto stand-in with credential checks on.
"""

from __future__ import annotations

import ast
import datetime as dt
import http.server
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ops.diagnose import local, parsers, probe, remote

DOMAIN = "cr.example.test"
ACCESS_KEY = "AKIAEXAMPLEKEY123456"
SECRET_KEY = "s3cr3t/Key+With/Slashes0123456789abcdef"
PROBE_SOURCE = Path(probe.__file__).read_text()


class _ZotLike(http.server.BaseHTTPRequestHandler):
    """Reply to every GET as an authenticated registry replies to /v2/: 401 with a Basic challenge."""

    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="zot"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def zot_like() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ZotLike)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _self_signed(folder: Path, domain: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=5))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def caddy_like(tmp_path: Path, zot_like: int) -> Iterator[dict[str, Any]]:
    """A TLS server on 127.0.0.1 that remembers the SNI name of each handshake."""
    cert, key = _self_signed(tmp_path, DOMAIN)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ZotLike)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"port": server.server_address[1], "sni": names}
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_server_files(root: Path, s3_endpoint: str, bucket: str) -> None:
    (root / "credentials.env").write_text(
        f"AWS_ACCESS_KEY_ID={ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY='{SECRET_KEY}'\n"
    )
    (root / "credentials.env").chmod(0o600)
    config = {
        "storage": {
            "rootDirectory": "/var/lib/zot",
            "storageDriver": {
                "name": "s3",
                "bucket": bucket,
                "region": "fsn1",
                "regionendpoint": s3_endpoint,
                "rootdirectory": "/zot",
                "secure": s3_endpoint.startswith("https"),
                "forcepathstyle": True,
            },
        },
        "http": {
            "address": "0.0.0.0",  # noqa: S104
            "port": "5000",
            "auth": {"htpasswd": {"path": "/x"}},
        },
        "log": {"level": "info", "output": "/var/log/zot/zot.log"},
    }
    (root / "config.json").write_text(json.dumps(config))
    (root / "htpasswd").write_text(
        "admin:$2y$05$abcdefghijklmnopqrstuuKl0123456789abcdefghijABCDEFGHIJ\nold:$apr1$salt$hash\n"
    )
    now = dt.datetime.now(dt.UTC)
    recent = now.isoformat().replace("+00:00", "Z")
    old = (now - dt.timedelta(days=3)).isoformat().replace("+00:00", "Z")
    lines = [
        {"level": "info", "time": recent, "message": "serving"},
        {"level": "error", "time": old, "message": "too old to count"},
        {
            "level": "error",
            "time": recent,
            "message": "s3 request failed",
            "error": f"InvalidAccessKeyId for {ACCESS_KEY} with secret {SECRET_KEY}",
        },
        {
            "level": "error",
            "time": recent,
            "message": "login",
            "error": "Authorization: Basic YWRtaW46cGFzc3dvcmQ=",
        },
    ]
    (root / "zot.log").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (root / "access.log").write_text(
        json.dumps({"ts": time.time(), "status": 502})
        + "\n"
        + json.dumps({"ts": time.time(), "status": 200})
        + "\n"
    )
    (root / "bootstrap.done").write_text('{"result": "failed", "reason": "no Caddy release"}\n')
    (root / "lock").mkdir()
    (root / "lock" / "owner").write_text(
        '{"operator": "ann@laptop", "pid": 7, "task": "deploy", "since": "now", "token": "f00d"}\n'
    )


def params_for(root: Path, zot_port: int, https_port: int, http_port: int) -> dict[str, Any]:
    params = remote.probe_params(DOMAIN)
    params["zot"].update(
        port=zot_port,
        config=str(root / "config.json"),
        log=str(root / "zot.log"),
        htpasswd=str(root / "htpasswd"),
        credentials=str(root / "credentials.env"),
    )
    params["caddy"].update(
        binary=str(root / "no-caddy"),
        caddyfile=str(root / "Caddyfile"),
        access_log=str(root / "access.log"),
        https_port=https_port,
        http_port=http_port,
    )
    params["disk_paths"] = [str(root), str(root / "missing")]
    params["bootstrap_marker"] = str(root / "bootstrap.done")
    params["lock_dir"] = str(root / "lock")
    return params


def run_probe_locally(params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Run the probe the way the server does: source on stdin, parameters as the argument."""
    completed = subprocess.run(
        [sys.executable, "-", json.dumps(params)],
        input=PROBE_SOURCE,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    return json.loads(completed.stdout), completed.stdout + completed.stderr


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    from ops.sandbox.standins.s3 import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3"), bucket="zot-probe")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def probe_run(
    tmp_path: Path, zot_like: int, caddy_like: dict[str, Any], s3_server
) -> dict[str, Any]:
    write_server_files(tmp_path, s3_server.url, "zot-probe")
    params = params_for(tmp_path, zot_like, caddy_like["port"], closed_port())
    facts, output = run_probe_locally(params)
    return {"facts": facts, "output": output, "sni": caddy_like["sni"]}


def test_probe_output_carries_no_secret(probe_run):
    assert SECRET_KEY not in probe_run["output"]
    assert ACCESS_KEY not in probe_run["output"]
    assert "YWRtaW46cGFzc3dvcmQ=" not in probe_run["output"]


def test_probe_reports_credentials_presence(probe_run):
    credentials = probe_run["facts"]["credentials"]
    assert credentials["access_key_present"]
    assert credentials["secret_key_present"]
    assert credentials["mode"] == "0600"
    assert credentials["keys"] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]


def test_probe_asks_zot_without_credentials(probe_run):
    reply = probe_run["facts"]["zot_http"]
    assert reply["status"] == 401
    assert reply["www_authenticate"] == 'Basic realm="zot"'


def test_probe_reaches_https_with_domain_as_sni(probe_run):
    reply = probe_run["facts"]["caddy_https"]
    assert reply["status"] == 401
    assert DOMAIN in probe_run["sni"]
    certificate = parsers.parse_certificate(reply["certificate_der"])
    assert certificate.covers(DOMAIN)
    assert probe_run["facts"]["caddy_tls_verify"]["verified"] is False


def test_probe_reports_refused_port(probe_run):
    assert probe_run["facts"]["caddy_http"]["refused"] is True


def test_probe_counts_recent_log_errors_redacted(probe_run):
    zot_file = probe_run["facts"]["logs"]["zot"][1]
    assert zot_file["errors"] == 2
    assert zot_file["lines"] == 3
    assert "********" in zot_file["sample"]
    access = probe_run["facts"]["logs"]["caddy_access"]
    assert (access["requests"], access["server_errors"]) == (2, 1)


def test_probe_reads_htpasswd_schemes(probe_run):
    htpasswd = probe_run["facts"]["htpasswd"]
    assert htpasswd["schemes"] == {"bcrypt": 1, "apr1": 1, "sha1": 0, "other": 0}


def test_probe_reads_marker_lock_and_disks(probe_run):
    facts = probe_run["facts"]
    assert facts["bootstrap"]["result"] == "failed"
    assert facts["bootstrap"]["reason"] == "no Caddy release"
    assert facts["lock"]["exists"]
    assert facts["lock"]["owner"] == {
        "operator": "ann@laptop",
        "pid": "7",
        "task": "deploy",
        "since": "now",
    }
    disks = list(facts["disks"].values())
    assert disks[0]["exists"] and disks[0]["total_bytes"] > 0
    assert disks[1] == {"exists": False}


def test_probe_lists_bucket_with_server_credentials(probe_run):
    s3 = probe_run["facts"]["s3"]
    assert s3["attempted"]
    assert s3["status"] == 403  # the key in credentials.env is not the stand-in's
    assert s3["error_code"] == "InvalidAccessKeyId"


def test_probe_without_caddy_binary_skips_validate(probe_run):
    caddy = probe_run["facts"]["caddy"]
    assert caddy["binary_file"] == {"exists": False}
    assert "validate" not in caddy


# --- HTTPS from the operator's machine ------------------------------------------


def test_https_from_here_uses_the_domain_as_sni(caddy_like: dict[str, Any]):
    resolution = {"ipv4": ["127.0.0.1"], "ipv6": [], "error": None}
    reply = local.https_from_here(
        DOMAIN, resolution, "internal", lambda address: (address, caddy_like["port"])
    )
    assert reply is not None
    assert reply["status"] == 401
    assert reply["address"] == "127.0.0.1"
    assert DOMAIN in caddy_like["sni"]


def test_https_at_recorded_endpoint(caddy_like: dict[str, Any]):
    reply = local.https_at(DOMAIN, "127.0.0.1", caddy_like["port"], "internal")
    assert reply["status"] == 401
    assert reply["address"] == f"127.0.0.1:{caddy_like['port']}, the recorded endpoint"
    assert DOMAIN in caddy_like["sni"]


def test_https_from_here_verifies_acme_certificates(caddy_like: dict[str, Any]):
    resolution = {"ipv4": ["127.0.0.1"], "ipv6": [], "error": None}
    reply = local.https_from_here(
        DOMAIN, resolution, "acme", lambda address: (address, caddy_like["port"])
    )
    assert reply is not None
    assert "status" not in reply
    assert "self-signed" in reply["verify_error"] or "certificate" in reply["verify_error"]


# --- SigV4 against the moto stand-in -------------------------------------------------


def s3_config(server, bucket: str) -> dict[str, Any]:
    return {
        "storage": {
            "driver": {
                "name": "s3",
                "bucket": bucket,
                "region": server.region,
                "regionendpoint": server.url,
                "rootdirectory": "/zot",
                "secure": False,
                "forcepathstyle": True,
            }
        }
    }


def test_signed_request_with_right_key_lists_bucket(s3_server):
    credentials = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key_id.reveal(),
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_access_key.reveal(),
    }
    facts = probe.collect_s3(s3_config(s3_server, s3_server.bucket), credentials)
    assert facts["status"] == 200, facts
    assert facts["error_code"] is None


def test_signed_request_with_wrong_secret(s3_server):
    credentials = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key_id.reveal(),
        "AWS_SECRET_ACCESS_KEY": "not-the-secret",
    }
    facts = probe.collect_s3(s3_config(s3_server, s3_server.bucket), credentials)
    assert (facts["status"], facts["error_code"]) == (403, "SignatureDoesNotMatch")


def test_signed_request_for_missing_bucket(s3_server):
    credentials = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key_id.reveal(),
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_access_key.reveal(),
    }
    facts = probe.collect_s3(s3_config(s3_server, "no-such-bucket"), credentials)
    assert (facts["status"], facts["error_code"]) == (404, "NoSuchBucket")


def test_s3_request_needs_both_keys():
    facts = probe.collect_s3(s3_config_stub(), {"AWS_ACCESS_KEY_ID": "x"})
    assert facts == {"attempted": False, "reason": "credentials missing"}


def s3_config_stub() -> dict[str, Any]:
    return {"storage": {"driver": {"name": "s3", "bucket": "b", "regionendpoint": "https://e"}}}


def test_s3_unreachable_endpoint_reports_error():
    config = s3_config_stub()
    config["storage"]["driver"].update(
        regionendpoint=f"http://127.0.0.1:{closed_port()}", forcepathstyle=True
    )
    facts = probe.collect_s3(config, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert "status" not in facts
    assert "ConnectionRefusedError" in facts["error"]


def test_virtual_host_style_puts_bucket_in_host():
    scheme, host, target, headers = probe.signed_s3_request(
        "GET", "https://fsn1.example.test", "bucket", "fsn1", False, {"list-type": "2"}, "AK", "SK"
    )
    assert (scheme, host, target) == ("https", "bucket.fsn1.example.test", "/?list-type=2")
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AK/")
    assert "SK" not in headers["authorization"]


# --- pure helpers ----------------------------------------------------------------------


def test_redaction_of_credentials_in_text():
    redactor = probe.Redactor()
    redactor.add("hunter2-is-long")
    text = (
        'pw hunter2-is-long "Authorization": ["Basic dXNlcjpwYXNz"] password=abc '
        "X-Amz-Signature=0123abcdef Credential=AKIAXYZ/20260101 token: t0k3n AKIAABCDEFGHIJKLMNOP"
    )
    masked = redactor(text, limit=1000)
    for secret in (
        "hunter2-is-long",
        "dXNlcjpwYXNz",
        "abc",
        "0123abcdef",
        "AKIAXYZ",
        "t0k3n",
        "AKIAABCDEFGHIJKLMNOP",
    ):
        assert secret not in masked
    assert masked.startswith("pw ******** ")


def test_redaction_keeps_short_values_and_limits_length():
    redactor = probe.Redactor()
    redactor.add("ab")
    assert redactor("ab cd", limit=100) == "ab cd"
    assert redactor("x" * 500, limit=20) == "x" * 17 + "..."


def test_env_file_parsing():
    text = "# comment\nexport A=1\nB='two words'\nC=\"3\"\n\nbroken line\nD==x\n"
    assert probe.parse_env_text(text) == {"A": "1", "B": "two words", "C": "3", "D": "=x"}


def test_systemctl_show_blocks():
    text = "Id=a.service\nActiveState=active\n\nId=b.timer\nActiveState=inactive\n"
    assert probe.parse_properties(text) == [
        {"Id": "a.service", "ActiveState": "active"},
        {"Id": "b.timer", "ActiveState": "inactive"},
    ]


@pytest.mark.parametrize(
    ("message", "priority", "level"),
    [
        ('{"level":"error","msg":"x"}', 6, "error"),
        ('{"level":"info","msg":"x"}', 3, "info"),
        ('time="t" level=fatal msg="x"', None, "fatal"),
        ("plain text", 3, "error"),
        ("plain text", 6, None),
    ],
)
def test_message_level(message: str, priority: int | None, level: str | None):
    assert probe.message_level(message, priority) == level


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:00.123456789Z", 1767225600.123456),
        ("2026-01-01T01:00:00+01:00", 1767225600.0),
        (1767225600, 1767225600.0),
        ("yesterday", None),
    ],
)
def test_parse_time(value: Any, expected: float | None):
    assert probe.parse_time(value) == expected


def test_summary_of_json_log_line():
    assert probe.summarize_message('{"msg": "failed", "error": "boom"}') == "failed: boom"
    assert probe.summarize_message("plain") == "plain"


def test_probe_uses_standard_library_only():
    tree = ast.parse(PROBE_SOURCE)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - sys.stdlib_module_names == set()


def test_probe_command_quotes_parameters():
    command = remote.probe_command({"domain": "a'; rm -rf / #"})
    assert command.startswith("python3 - '")
    assert command.endswith("'")
    assert "'\"'\"'" in command


def write_cloud_init_run_dir(folder: Path, stages: dict[str, Any], result: bool) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "status.json").write_text(json.dumps({"v1": stages}))
    if result:
        (folder / "result.json").write_text(json.dumps({"v1": {"errors": []}}))
    return str(folder)


FINISHED = {"start": 100.0, "finished": 101.0, "errors": []}


@pytest.mark.parametrize(
    ("stages", "result", "status"),
    [
        ({"datasource": "DataSourceHetzner", "init": FINISHED, "stage": None}, True, "done"),
        ({"init": FINISHED, "modules-final": {"start": 102.0, "finished": None}}, True, "running"),
        ({"init": FINISHED, "stage": "modules-config"}, True, "running"),
        ({"init": FINISHED}, False, "running"),
        ({"init": {**FINISHED, "errors": ["('scripts_user', RuntimeError())"]}}, True, "error"),
        ({"init": {"start": None, "finished": None, "errors": []}}, True, "not run"),
    ],
)
def test_cloud_init_status_from_files(tmp_path: Path, stages, result: bool, status: str):
    run_dir = write_cloud_init_run_dir(tmp_path / "run", stages, result)
    assert probe.cloud_init_status_from_files(run_dir)["status"] == status


def test_cloud_init_error_detail_lists_errors(tmp_path: Path):
    stages = {"modules-final": {**FINISHED, "errors": ["runcmd failed", "second"]}}
    run_dir = write_cloud_init_run_dir(tmp_path / "run", stages, True)
    assert probe.cloud_init_status_from_files(run_dir)["detail"] == "runcmd failed; second"


def test_cloud_init_status_without_status_file(tmp_path: Path):
    assert probe.cloud_init_status_from_files(str(tmp_path)) is None
