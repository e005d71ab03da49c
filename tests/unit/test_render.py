"""Rendering: every output parses with its real parser and no value can inject."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ops import htpasswd, layout
from ops.config import parse_settings
from ops.render import (
    USER_DATA_LIMIT,
    DeploymentSecrets,
    RenderError,
    _yaml_block,
    render_files,
    render_user_data,
)
from ops.secrets import Secret

CADDY_VERSION = "2.10.2"
ACCESS_KEY = "AKIAEXAMPLEACCESSKEY"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
PASSWORD = "correct-horse-battery-staple"
HOSTILE = "a'b\"c$(touch /tmp/pwned)`id`;d\\e\nf ü 𝄞 %h {x}"


@pytest.fixture
def secrets() -> DeploymentSecrets:
    hashes = {
        name: htpasswd.hash_password(Secret(PASSWORD), rounds=4)
        for name in ("admin", "ci", "viewer")
    }
    return DeploymentSecrets(Secret(ACCESS_KEY), Secret(SECRET_KEY), hashes)


def cloud_config(text: str) -> dict:
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Parse a systemd unit: sections of KEY=VALUE with backslash continuations."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw if pending else raw
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1]
            sections[current] = []
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        key, sep, value = stripped.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key), key
        sections[current].append((key, value.strip()))
    assert not pending, "unit ends in a continuation"
    return sections


def test_user_data_parses_and_matches_files(base_settings, secrets):
    settings = parse_settings(base_settings)
    text = render_user_data(settings, secrets, "console", CADDY_VERSION)
    data = cloud_config(text)
    files = render_files(settings, secrets, "console", CADDY_VERSION)
    written = {entry["path"]: entry for entry in data["write_files"]}
    assert set(written) == set(files)
    for path, rendered in files.items():
        assert written[path]["content"] == rendered.content, path
        assert written[path]["permissions"] == f"{rendered.mode:04o}"
    assert data["packages"] == [
        "podman",
        "ufw",
        "unattended-upgrades",
        "curl",
        "ca-certificates",
        "python3",
    ]
    assert data["runcmd"] == [["bash", layout.BOOTSTRAP_SCRIPT]]
    assert data["ssh_pwauth"] is False
    assert len(text.encode()) < USER_DATA_LIMIT


def test_secret_files_are_private(base_settings, secrets):
    files = render_files(parse_settings(base_settings), secrets, "console", CADDY_VERSION)
    for path in (layout.ZOT_CREDENTIALS, layout.ZOT_HTPASSWD, layout.ZOT_CONFIG):
        assert files[path].mode == 0o600, path
    assert files[layout.ZOT_CREDENTIALS].content == (
        f"AWS_ACCESS_KEY_ID={ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n"
    )


def test_deploy_mode_user_data_has_no_secret(base_settings, secrets):
    settings = parse_settings(base_settings)
    text = render_user_data(settings, secrets, "deploy", CADDY_VERSION)
    assert ACCESS_KEY not in text
    assert SECRET_KEY not in text
    for hashed in secrets.password_hashes.values():
        assert hashed not in text
    assert "$2b$" not in text
    paths = {entry["path"] for entry in cloud_config(text)["write_files"]}
    assert layout.ZOT_CREDENTIALS not in paths
    assert layout.ZOT_HTPASSWD not in paths


def test_console_mode_needs_secrets(base_settings):
    with pytest.raises(RenderError, match="none were given"):
        render_user_data(parse_settings(base_settings), None, "console", CADDY_VERSION)


def test_zot_config_contents(base_settings, secrets):
    files = render_files(parse_settings(base_settings), secrets, "console", CADDY_VERSION)
    config = json.loads(files[layout.ZOT_CONFIG].content)
    driver = config["storage"]["storageDriver"]
    assert driver == {
        "name": "s3",
        "rootdirectory": "/zot",
        "region": "fsn1",
        "regionendpoint": "https://fsn1.your-objectstorage.com",
        "bucket": "my-registry-storage",
        "secure": True,
        "skipverify": False,
        "forcepathstyle": True,
    }
    assert config["http"]["compat"] == ["docker2s2"]
    assert config["http"]["port"] == "5000"
    assert config["http"]["address"] == "127.0.0.1"
    assert config["http"]["externalUrl"] == "https://registry.example.com"
    assert config["http"]["auth"]["htpasswd"]["path"] == layout.ZOT_HTPASSWD
    control = config["http"]["accessControl"]
    assert control["adminPolicy"]["users"] == ["admin"]
    assert control["repositories"]["**"]["policies"] == [
        {"users": ["ci"], "actions": ["read", "create", "update"]},
        {"users": ["viewer"], "actions": ["read"]},
    ]
    assert control["repositories"]["**"]["anonymousPolicy"] == []
    assert config["log"]["output"] == layout.ZOT_LOG
    assert config["log"]["audit"] == layout.ZOT_AUDIT_LOG
    assert "AWS" not in files[layout.ZOT_CONFIG].content


def test_units_parse(base_settings, secrets):
    files = render_files(parse_settings(base_settings), secrets, "console", CADDY_VERSION)
    zot = parse_unit(files[layout.ZOT_UNIT_PATH].content)
    assert set(zot) == {"Unit", "Service", "Install"}
    service = dict(zot["Service"])
    assert service["Type"] == "notify"
    exec_start = service["ExecStart"].split()
    assert exec_start[0] == "/usr/bin/podman"
    assert "--sdnotify=conmon" in exec_start
    assert f"{layout.AUTOUPDATE_LABEL}=registry" in exec_start
    assert "--network" in exec_start
    assert exec_start[exec_start.index("--network") + 1] == "host"
    assert "--publish" not in exec_start
    assert exec_start[-3:] == [
        "ghcr.io/project-zot/zot-linux-amd64:v2.1.14",
        "serve",
        layout.ZOT_CONFIG,
    ]
    conditions = [value for key, value in zot["Unit"] if key == "ConditionPathExists"]
    assert conditions == [layout.ZOT_CREDENTIALS, layout.ZOT_HTPASSWD]

    caddy = parse_unit(files[layout.CADDY_UNIT_PATH].content)
    caddy_service = dict(caddy["Service"])
    assert caddy_service["User"] == "caddy"
    assert caddy_service["ProtectSystem"] == "strict"
    assert caddy_service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"


def test_bootstrap_script_is_valid_bash(base_settings, secrets, tmp_path):
    files = render_files(parse_settings(base_settings), secrets, "console", CADDY_VERSION)
    script = tmp_path / "bootstrap.sh"
    script.write_text(files[layout.BOOTSTRAP_SCRIPT].content)
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="Debian's shellcheck is not installed")
def test_bootstrap_script_passes_shellcheck(base_settings, secrets, tmp_path):
    files = render_files(parse_settings(base_settings), secrets, "console", CADDY_VERSION)
    script = tmp_path / "bootstrap.sh"
    script.write_text(files[layout.BOOTSTRAP_SCRIPT].content)
    result = subprocess.run(
        ["shellcheck", "--severity=style", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(not shutil.which("caddy"), reason="Debian's caddy package is not installed")
@pytest.mark.parametrize("options", [{}, {"acme_staging": True}, {"tls": "internal"}])
def test_caddyfile_validates_with_caddy(base_settings, secrets, tmp_path, options):
    raw = {**base_settings, **options}
    files = render_files(parse_settings(raw), secrets, "console", CADDY_VERSION)
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(files[layout.CADDYFILE].content)
    result = subprocess.run(
        ["caddy", "validate", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    adapted = subprocess.run(
        ["caddy", "adapt", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    server = json.loads(adapted.stdout)["apps"]["http"]["servers"]["srv0"]
    route = json.dumps(server["routes"])
    assert "127.0.0.1:5000" in route
    assert "max_size" not in route
    assert server["listen"] == [":443"]


@pytest.mark.skipif(
    not shutil.which("cloud-init"), reason="Debian's cloud-init package is not installed"
)
@pytest.mark.parametrize("mode", ["console", "deploy"])
def test_user_data_passes_cloud_init_schema(base_settings, secrets, tmp_path, mode):
    raw = copy.deepcopy(base_settings)
    raw["bootstrap"] = {"apt_proxy": "http://127.0.0.1:3142"}
    raw["zot"] = {"insecure_registries": ["127.0.0.1:5001"]}
    path = tmp_path / "user-data.yaml"
    path.write_text(render_user_data(parse_settings(raw), secrets, mode, CADDY_VERSION))
    result = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


# --- hostile values --------------------------------------------------------


def hostile_settings(base_settings, tmp_path) -> dict:
    """Settings where every free-form value carries quotes, $, backticks, ; and newlines."""
    raw = copy.deepcopy(base_settings)
    key = Path(raw["ssh"]["public_key"])
    key_type, body, _ = key.read_text().split(" ", 2)
    hostile_key = tmp_path / "hostile.pub"
    # A key comment is free text in OpenSSH, but cannot contain a newline.
    hostile_key.write_text(f"{key_type} {body} {HOSTILE.replace(chr(10), ' ')}\n")
    raw["ssh"]["public_key"] = str(hostile_key)
    raw["caddy"]["download_base"] = "https://example.com/a'b$(id)`id`;c%20d/dl"
    raw["bootstrap"] = {"apt_proxy": "http://127.0.0.1:3142/x'$(id);`id`"}
    raw["acme_email"] = "o'ps+$x&y|z#w@example.com"
    return raw


def test_hostile_values_round_trip_through_yaml(base_settings, secrets, tmp_path):
    raw = hostile_settings(base_settings, tmp_path)
    settings = parse_settings(raw)
    data = cloud_config(render_user_data(settings, secrets, "console", CADDY_VERSION))
    assert data["users"][0]["ssh_authorized_keys"] == [
        Path(raw["ssh"]["public_key"]).read_text().strip()
    ]
    assert data["apt"]["proxy"] == raw["bootstrap"]["apt_proxy"]


def test_hostile_values_round_trip_through_shell(base_settings, secrets, tmp_path):
    raw = hostile_settings(base_settings, tmp_path)
    files = render_files(parse_settings(raw), secrets, "console", CADDY_VERSION)
    script = files[layout.BOOTSTRAP_SCRIPT].content
    assignments = "\n".join(line for line in script.splitlines() if re.match(r"^[A-Z_]+=", line))
    marker = tmp_path / "pwned"
    probe = assignments + '\nprintf "%s" "$CADDY_DOWNLOAD_BASE"\n'
    result = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path, timeout=30
    )
    assert result.stdout == raw["caddy"]["download_base"]
    assert not marker.exists()


@pytest.mark.skipif(not shutil.which("caddy"), reason="Debian's caddy package is not installed")
def test_hostile_email_round_trips_through_caddyfile(base_settings, secrets, tmp_path):
    raw = hostile_settings(base_settings, tmp_path)
    files = render_files(parse_settings(raw), secrets, "console", CADDY_VERSION)
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(files[layout.CADDYFILE].content)
    adapted = subprocess.run(
        ["caddy", "adapt", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert adapted.returncode == 0, adapted.stderr[-2000:]
    assert raw["acme_email"] in json.dumps(json.loads(adapted.stdout))


@pytest.mark.parametrize(
    "text",
    [
        "plain\n",
        "no newline at end",
        "two\n\n",
        "  leading spaces\nnext\n",
        "tab\tinside\n",
        "unicode ü 𝄞\n",
        "line\u2028separator\n",
        "nel\x85char\n",
        "bell\x07\n",
        "carriage\r\nreturn\n",
        "# looks like a comment\n- looks: like yaml\n",
        "",
    ],
)
def test_yaml_block_round_trips(text):
    document = "files:\n  - path: x\n    content: " + _yaml_block(text, 6) + "\n"
    assert yaml.safe_load(document)["files"][0]["content"] == text


@pytest.mark.parametrize("bad", ["with space", "new\nline", "tab\tkey", ""])
def test_credentials_reject_unsafe_values(base_settings, bad):
    hashes = {"admin": htpasswd.hash_password(Secret(PASSWORD), rounds=4)}
    secrets = DeploymentSecrets(Secret(bad), Secret(SECRET_KEY), hashes)
    with pytest.raises(RenderError) as caught:
        render_files(parse_settings(base_settings), secrets, "console", CADDY_VERSION)
    assert bad not in str(caught.value) or not bad


def test_user_data_over_limit_rejected(base_settings, secrets, tmp_path, monkeypatch):
    import ops.render as render_module

    monkeypatch.setattr(render_module, "USER_DATA_LIMIT", 1000)
    with pytest.raises(RenderError, match="Hetzner accepts at most 1000"):
        render_user_data(parse_settings(base_settings), secrets, "console", CADDY_VERSION)


def test_rendering_is_deterministic(base_settings, secrets):
    settings = parse_settings(base_settings)
    first = render_user_data(settings, secrets, "deploy", CADDY_VERSION)
    second = render_user_data(settings, secrets, "deploy", CADDY_VERSION)
    assert first == second


@pytest.mark.parametrize(
    "value", ["plain", "𝄞 astral", "line\u2028sep", "nel\x85", "bom\ufeff", 'q"uote\\', "ü"]
)
def test_yaml_scalar_round_trips(value):
    from ops.render import _yaml_scalar

    assert yaml.safe_load("key: " + _yaml_scalar(value))["key"] == value
