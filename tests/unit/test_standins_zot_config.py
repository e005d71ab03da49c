"""Translation of zot configs into distribution configs by the zot stand-in image's jq program."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

JQ = shutil.which("jq")
PROGRAM = resources.files("ops.sandbox.standins") / "image" / "zot-to-distribution.jq"

pytestmark = pytest.mark.skipif(JQ is None, reason="jq is not installed")

S3_CONFIG = {
    "distSpecVersion": "1.1.0",
    "storage": {
        "rootDirectory": "/var/lib/zot",
        "dedupe": False,
        "storageDriver": {
            "name": "s3",
            "rootdirectory": "/zot",
            "region": "fsn1",
            "regionendpoint": "https://fsn1.your-objectstorage.com",
            "bucket": "registry-bucket",
            "secure": True,
            "skipverify": False,
            "forcepathstyle": True,
        },
    },
    "http": {
        "address": "127.0.0.1",
        "port": "5000",
        "realm": "zot",
        "auth": {"htpasswd": {"path": "/etc/zot/htpasswd"}},
        "accessControl": {"repositories": {"**": {"defaultPolicy": ["read"]}}},
    },
    "log": {"level": "debug", "output": "/var/log/zot/zot.log", "audit": "/var/log/zot/audit.log"},
    "extensions": {"metrics": {"enable": True}},
}


def translate(
    config: dict, tmp_path: Path, want: str = "distribution"
) -> subprocess.CompletedProcess:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [JQ, "--arg", "want", want, "-f", str(PROGRAM), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def distribution(config: dict, tmp_path: Path) -> dict:
    result = translate(config, tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_s3_storage_mapped(tmp_path: Path):
    storage = distribution(S3_CONFIG, tmp_path)["storage"]

    assert storage["s3"] == {
        "region": "fsn1",
        "regionendpoint": "https://fsn1.your-objectstorage.com",
        "bucket": "registry-bucket",
        "rootdirectory": "/zot",
        "secure": True,
        "skipverify": False,
        "v4auth": True,
    }
    assert storage["redirect"] == {"disable": True}
    assert storage["delete"] == {"enabled": True}


def test_no_credentials_written(tmp_path: Path):
    s3 = distribution(S3_CONFIG, tmp_path)["storage"]["s3"]

    assert "accesskey" not in s3
    assert "secretkey" not in s3


def test_http_and_auth_mapped(tmp_path: Path):
    translated = distribution(S3_CONFIG, tmp_path)

    assert translated["version"] == "0.1"
    assert translated["http"]["addr"] == "127.0.0.1:5000"
    assert translated["http"]["relativeurls"] is True
    assert translated["auth"] == {"htpasswd": {"realm": "zot", "path": "/etc/zot/htpasswd"}}
    assert translated["log"]["level"] == "debug"
    assert translated["log"]["formatter"] == "json"


def test_false_values_kept(tmp_path: Path):
    config = json.loads(json.dumps(S3_CONFIG))
    config["storage"]["storageDriver"].update(secure=False, skipverify=True)

    s3 = distribution(config, tmp_path)["storage"]["s3"]

    assert s3["secure"] is False
    assert s3["skipverify"] is True


def test_keys_matched_case_insensitively(tmp_path: Path):
    config = {
        "Storage": {"RootDirectory": "/srv/zot"},
        "HTTP": {"Address": "::1", "Port": 5001, "Auth": {"HTPasswd": {"Path": "/h"}}},
    }

    translated = distribution(config, tmp_path)

    assert translated["storage"]["filesystem"] == {"rootdirectory": "/srv/zot"}
    assert translated["http"]["addr"] == "[::1]:5001"
    assert translated["auth"]["htpasswd"]["path"] == "/h"
    assert translated["auth"]["htpasswd"]["realm"] == "zot"


def test_defaults_without_auth(tmp_path: Path):
    translated = distribution({"storage": {"rootDirectory": "/var/lib/zot"}, "http": {}}, tmp_path)

    assert translated["http"]["addr"] == "0.0.0.0:5000"
    assert "auth" not in translated
    assert translated["log"]["level"] == "info"


def test_tls_mapped(tmp_path: Path):
    config = json.loads(json.dumps(S3_CONFIG))
    config["http"]["tls"] = {"cert": "/etc/zot/cert.pem", "key": "/etc/zot/key.pem"}

    tls = distribution(config, tmp_path)["http"]["tls"]

    assert tls == {"certificate": "/etc/zot/cert.pem", "key": "/etc/zot/key.pem"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["storage"]["storageDriver"].pop("bucket"), "bucket is missing"),
        (lambda c: c["storage"]["storageDriver"].update(name="gcs"), "is not supported"),
        (lambda c: c.pop("http"), "http is missing"),
    ],
)
def test_invalid_config_fails(tmp_path: Path, change, message: str):
    config = json.loads(json.dumps(S3_CONFIG))
    change(config)

    result = translate(config, tmp_path)

    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    ("want", "expected"),
    [("log-output", "/var/log/zot/zot.log\n"), ("log-audit", "/var/log/zot/audit.log\n")],
)
def test_log_paths(tmp_path: Path, want: str, expected: str):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(S3_CONFIG))

    result = subprocess.run(
        [JQ, "-r", "--arg", "want", want, "-f", str(PROGRAM), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout == expected


def test_log_paths_empty_when_unset(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"storage": {}, "http": {}}))

    result = subprocess.run(
        [JQ, "-r", "--arg", "want", "log-output", "-f", str(PROGRAM), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout == "\n"
