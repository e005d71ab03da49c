"""Settings validation: every bad value gets one line naming key, value and fix."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from ops.config import parse_settings
from ops.errors import ConfigError


def with_value(base: dict, dotted: str, value) -> dict:
    raw = copy.deepcopy(base)
    target = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    return raw


# (key, bad value, text the error must contain)
BAD_VALUES = [
    ("domain", "exa mple.com", "invalid label"),
    ("domain", "localhost", "single label"),
    ("domain", "-bad.example.com", "invalid label"),
    ("domain", "a" * 64 + ".example.com", "invalid label"),
    ("domain", "registry.example.123", "numeric label"),
    ("domain", "reg;rm -rf.example.com", "invalid label"),
    ("domain", "", "1 to 253"),
    ("domain", "https://registry.example.com/", "is a URL, not a domain name"),
    ("name", "Registry", "deployment name"),
    ("name", "9lives", "deployment name"),
    ("acme_email", "not-an-email", "e-mail address"),
    ("acme_email", "ops@exa mple.com", "e-mail address"),
    ("acme_email", "o{ps}@example.com", "e-mail address"),
    ("storage.bucket", "My_Bucket", "S3 bucket name"),
    ("storage.bucket", "ab", "S3 bucket name"),
    ("storage.bucket", "a..b", "dot next to a dot"),
    ("storage.bucket", "192.168.10.1", "IP address"),
    ("storage.bucket", "xn--bucket", "reserves"),
    ("storage.location", "ams1", "fsn1, nbg1, hel1"),
    ("server.location", "xyz", "Hetzner Cloud location"),
    ("server.type", "huge server", "server type"),
    ("server.image", "ubuntu-24.04", "debian-12"),
    ("zot.image", "zot:latest", "fully qualified"),
    ("zot.image", "ghcr.io/project-zot/zot-linux-amd64", "no tag or digest"),
    ("zot.image", "ghcr.io/Project/zot:v1", "fully qualified"),
    ("zot.image", "ghcr.io/project-zot/zot:v1;reboot", "fully qualified"),
    ("zot.insecure_registries", ["bad host"], "registry address"),
    ("ssh.port", 0, "TCP port"),
    ("ssh.port", 70000, "TCP port"),
    ("ssh.allowed_cidrs", ["10.0.0.1/8"], "host bits set; use the network address 10.0.0.0/8"),
    ("ssh.allowed_cidrs", ["anywhere"], "CIDR network"),
    ("ssh.allowed_cidrs", [], "at least 1 item"),
    ("ssh.user", "admin", "logs in as root"),
    ("users", [{"name": "a:b", "role": "admin"}], "user name"),
    ("users", [{"name": "bob\n", "role": "admin"}], "user name"),
    ("users", [{"name": "bob", "role": "owner"}], "is not a role"),
    ("users", [{"name": "bob", "role": "read"}], "at least one user needs role admin"),
    (
        "users",
        [{"name": "a", "role": "admin"}, {"name": "a", "role": "read"}],
        "names must be unique",
    ),
    ("caddy.version", "two", "Caddy version"),
    ("caddy.download_base", "ftp://example.com/caddy", "http or https URL"),
    ("caddy.download_base", "https://user:pw@example.com/", "credentials"),
    ("bootstrap.apt_proxy", "proxy:3142", "http or https URL"),
    ("storage.endpoint", "fsn1.your-objectstorage.com", "http or https URL"),
    ("storage.root_directory", "zot", "should match pattern"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES)
def test_bad_value_names_key_and_value(base_settings, key, value, expected):
    with pytest.raises(ConfigError) as caught:
        parse_settings(with_value(base_settings, key, value))
    message = str(caught.value)
    assert expected in message
    assert f"deployment.{key}" in message
    if isinstance(value, str) and value:
        assert repr(value)[:60].rstrip("'") in message


def test_each_bad_value_gets_its_own_line(base_settings):
    raw = with_value(base_settings, "domain", "bad domain")
    raw = with_value(raw, "storage.bucket", "Bad_Bucket")
    raw = with_value(raw, "storage.location", "mars")
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw)
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("deployment.domain = 'bad domain'")
    assert lines[1].startswith("deployment.storage.bucket = 'Bad_Bucket'")
    assert lines[2].startswith("deployment.storage.location = 'mars'")


def test_missing_required_values_listed(ssh_public_key):
    with pytest.raises(ConfigError) as caught:
        parse_settings({"ssh": {"public_key": str(ssh_public_key)}})
    message = str(caught.value)
    assert "deployment.domain is missing" in message
    assert "deployment.acme_email is missing" in message
    assert "deployment.storage is missing" in message


@pytest.mark.parametrize("key", ["hcloud_token", "password", "aws_secret_access_key"])
def test_secret_in_config_rejected(base_settings, key):
    raw = with_value(base_settings, key, "s3cr3t-value")
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw)
    assert "looks like a secret" in str(caught.value)
    assert "s3cr3t-value" not in str(caught.value)


def test_unknown_key_rejected(base_settings):
    with pytest.raises(ConfigError, match=re.escape("deployment.storage.bukket is not a known")):
        parse_settings(with_value(base_settings, "storage.bukket", "x"))


def test_ssh_key_missing_file(base_settings, tmp_path):
    raw = with_value(base_settings, "ssh.public_key", str(tmp_path / "nope.pub"))
    with pytest.raises(ConfigError, match="does not exist; create a key with ssh-keygen"):
        parse_settings(raw)


@pytest.mark.parametrize(
    "content",
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n",
        "ssh-ed25519 not*base64 me\n",
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIK+fFv0nW3Xr8U9gggNyYXz/JQ3UIRyOIIICxAYzjVZS me\n",
        "",
    ],
)
def test_ssh_key_unparsable(base_settings, tmp_path, content):
    path = tmp_path / "key.pub"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        parse_settings(with_value(base_settings, "ssh.public_key", str(path)))
    assert "deployment.ssh.public_key" in str(caught.value)


def test_derived_values(base_settings):
    settings = parse_settings(base_settings)
    assert settings.storage.endpoint == "https://fsn1.your-objectstorage.com"
    assert settings.storage.region == "fsn1"
    assert settings.storage.secure is True
    assert settings.zot.image == "ghcr.io/project-zot/zot-linux-amd64:v2.1.14"
    assert settings.ssh.private_key == Path(base_settings["ssh"]["public_key"]).with_suffix("")


def test_arm_server_gets_arm_image(base_settings):
    settings = parse_settings(with_value(base_settings, "server.type", "cax11"))
    assert settings.server.architecture == "arm64"
    assert settings.zot.image == "ghcr.io/project-zot/zot-linux-arm64:v2.1.14"


def test_domain_normalised(base_settings):
    settings = parse_settings(with_value(base_settings, "domain", "Registry.Example.COM."))
    assert settings.domain == "registry.example.com"


def test_settings_are_frozen(base_settings):
    settings = parse_settings(base_settings)
    with pytest.raises(ValueError, match="frozen"):
        settings.domain = "other.example.com"


def test_environment_overrides_project_file(base_settings, tmp_path, monkeypatch):
    import yaml
    from invoke.config import Config

    from ops.config import defaults, load_settings

    (tmp_path / "invoke.yaml").write_text(yaml.safe_dump({"deployment": base_settings}))
    monkeypatch.setenv("INVOKE_DEPLOYMENT_DOMAIN", "other.example.com")
    monkeypatch.setenv("INVOKE_DEPLOYMENT_STORAGE_LOCATION", "hel1")
    config = Config(project_location=str(tmp_path))
    config.load_collection({"deployment": defaults()})
    config.load_project()
    config.load_shell_env()

    class Context:
        pass

    context = Context()
    context.config = config
    settings = load_settings(context)
    assert settings.domain == "other.example.com"
    assert settings.storage.location == "hel1"
    assert settings.storage.endpoint == "https://hel1.your-objectstorage.com"
    assert settings.storage.bucket == "my-registry-storage"
