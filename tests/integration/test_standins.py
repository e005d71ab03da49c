"""The stand-ins with the real programs they wrap: Debian's caddy, moto, buildah, skopeo,
Debian's docker-registry and apt against this machine's Debian mirror.

Needs root (buildah storage, chroot, mknod) and the host packages from
scripts/install-host-packages.sh.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from botocore.exceptions import ClientError

from ops.sandbox.standins.apt_proxy import AptProxy
from ops.sandbox.standins.caddy_releases import CaddyFault, CaddyReleaseServer, elf_machine
from ops.sandbox.standins.process import http_status
from ops.sandbox.standins.registry import LocalRegistry
from ops.sandbox.standins.s3 import S3Server
from ops.sandbox.standins.zot_image import ZotStandinImage, ZotStandinOnHost
from ops.secrets import Secret

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

USER = "alice"
PASSWORD = "correct-horse-battery"


def download(url: str, target: Path) -> Path:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=60) as response:
        target.write_bytes(response.read())
    return target


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def caddy_releases(tmp_path_factory) -> Iterator[CaddyReleaseServer]:
    with CaddyReleaseServer(tmp_path_factory.mktemp("caddy")) as server:
        yield server


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Iterator[ZotStandinImage]:
    builder = ZotStandinImage(tmp_path_factory.mktemp("image"))
    for version in ("v1", "v2"):
        builder.build(version)
    yield builder
    builder.remove_storage()


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    with S3Server(tmp_path / "s3") as server:
        yield server


# --- Caddy releases -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.6.2", "2.6.3"])
def test_caddy_tarball_verifies_and_runs(
    caddy_releases: CaddyReleaseServer, tmp_path: Path, version: str
):
    tarball = download(
        caddy_releases.tarball_url(version, "amd64"),
        tmp_path / f"caddy_{version}_linux_amd64.tar.gz",
    )
    checksums = download(caddy_releases.checksums_url(version), tmp_path / "checksums.txt")

    check = subprocess.run(
        ["sha512sum", "--check", "--ignore-missing", "--strict", checksums.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{tarball.name}: OK" in check.stdout

    with tarfile.open(tarball) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    caddy = tmp_path / "unpacked" / "caddy"
    result = subprocess.run(
        [str(caddy), "version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    # Upstream's form, which the bootstrap matches with ^v<version>[ -].
    assert re.match(rf"^v{re.escape(version)} h1:", result.stdout)
    modules = subprocess.run(
        [str(caddy), "list-modules"], capture_output=True, text=True, timeout=30, check=True
    )
    assert "http.handlers.reverse_proxy" in modules.stdout


def test_caddy_arm64_tarball_is_arm64(caddy_releases: CaddyReleaseServer, tmp_path: Path):
    tarball = download(caddy_releases.tarball_url("2.6.3", "arm64"), tmp_path / "arm64.tar.gz")
    listed = download(caddy_releases.checksums_url("2.6.3"), tmp_path / "sums").read_text()

    assert f"{hashlib.sha512(tarball.read_bytes()).hexdigest()}  {tarball.name}" not in listed
    assert hashlib.sha512(tarball.read_bytes()).hexdigest() in listed
    with tarfile.open(tarball) as archive:
        binary = archive.extractfile("caddy").read()
    assert elf_machine(binary) == 0xB7
    assert b"2.6.3" in binary


def test_caddy_releases_api_latest(caddy_releases: CaddyReleaseServer, tmp_path: Path):
    release = json.loads(download(caddy_releases.releases_api(), tmp_path / "latest").read_text())

    assert release["tag_name"] == "v2.6.3"


def test_caddy_broken_binary_fails_to_run(caddy_releases: CaddyReleaseServer, tmp_path: Path):
    caddy_releases.inject_fault(CaddyFault.BROKEN_BINARY, "2.6.3")
    try:
        tarball = download(
            caddy_releases.tarball_url("2.6.3", "amd64"),
            tmp_path / "caddy_2.6.3_linux_amd64.tar.gz",
        )
        download(caddy_releases.checksums_url("2.6.3"), tmp_path / "sums")
    finally:
        caddy_releases.reset()
    check = subprocess.run(
        ["sha512sum", "--check", "--ignore-missing", "sums"], cwd=tmp_path, check=False
    )
    with tarfile.open(tarball) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")

    assert check.returncode == 0
    run = subprocess.run(
        [str(tmp_path / "unpacked" / "caddy"), "version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode != 0
    assert "2.6.3" not in run.stdout


# --- S3 -----------------------------------------------------------------------------------


def test_s3_put_and_list(s3: S3Server):
    s3.client().put_object(Bucket=s3.bucket, Key="zot/docker/registry/v2/x", Body=b"blob")

    assert s3.list_objects("zot/") == ["zot/docker/registry/v2/x"]
    assert s3.settings_overrides(9000)["storage.endpoint"] == "http://127.0.0.1:9000"
    assert s3.settings_overrides(9000, "10.88.0.1")["storage.endpoint"] == "http://10.88.0.1:9000"
    assert s3.settings_overrides()["storage.path_style"] is True
    assert s3.settings_overrides()["storage.bucket"] == s3.bucket


@pytest.mark.parametrize(
    ("wrong", "code"),
    [("access_key_id", "InvalidAccessKeyId"), ("secret_access_key", "SignatureDoesNotMatch")],
)
def test_s3_rejects_wrong_credentials(s3: S3Server, wrong: str, code: str):
    credentials = {"access_key_id": s3.access_key_id, "secret_access_key": s3.secret_access_key}
    credentials[wrong] = Secret("AKIAWRONGWRONGWRONG0" if wrong == "access_key_id" else "x" * 40)

    with pytest.raises(ClientError) as raised:
        s3.client(**credentials).list_objects_v2(Bucket=s3.bucket)

    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_s3_credentials_file_private(s3: S3Server):
    mode = s3.credentials_file.stat().st_mode & 0o777
    lines = s3.credentials_file.read_text().splitlines()

    assert mode == 0o600
    assert [line.split("=", 1)[0] for line in lines] == [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ]


# --- zot stand-in image and local registry ---------------------------------------------------


def test_image_config_matches_zot(image: ZotStandinImage):
    config = image.inspect(image.local_reference("v2"))["OCIv1"]["config"]

    assert config["Entrypoint"] == ["/usr/bin/zot"]
    assert config["Cmd"] == ["serve", "/etc/zot/config.json"]
    assert "5000/tcp" in config["ExposedPorts"]
    assert config["Labels"]["org.opencontainers.image.version"] == "v2"


def test_registry_push_and_read_back(image: ZotStandinImage, tmp_path: Path):
    with LocalRegistry(tmp_path / "registry") as registry:
        tag = "project-zot/zot-standin:latest"
        first = registry.push(image.storage_reference(image.local_reference("v1")), tag)
        v1 = registry.inspect(tag)
        registry.push(image.storage_reference(image.local_reference("v2")), tag)
        v2 = registry.inspect(tag)
        overrides = registry.settings_overrides(tag, guest_port=5999)

    assert first == f"127.0.0.1:{registry.port}/{tag}"
    assert v1["Labels"]["org.opencontainers.image.version"] == "v1"
    assert v2["Labels"]["org.opencontainers.image.version"] == "v2"
    assert v1["Digest"] != v2["Digest"]
    assert overrides == {
        "zot.image": "127.0.0.1:5999/project-zot/zot-standin:latest",
        "zot.insecure_registries": ["127.0.0.1:5999"],
    }


def zot_config(s3: S3Server) -> dict:
    return {
        "distSpecVersion": "1.1.0",
        "storage": {
            "rootDirectory": "/var/lib/zot",
            "dedupe": False,
            "storageDriver": {
                "name": "s3",
                "rootdirectory": "/zot",
                "region": s3.region,
                "regionendpoint": s3.url,
                "bucket": s3.bucket,
                "secure": False,
                "skipverify": False,
                "forcepathstyle": True,
            },
        },
        "http": {"realm": "zot", "auth": {"htpasswd": {"path": "/etc/zot/htpasswd"}}},
        "log": {
            "level": "info",
            "output": "/var/log/zot/zot.log",
            "audit": "/var/log/zot/audit.log",
        },
    }


@pytest.fixture
def zot_on_host(image: ZotStandinImage, s3: S3Server, tmp_path: Path) -> Iterator[ZotStandinOnHost]:
    htpasswd = f"{USER}:".encode() + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5))
    with ZotStandinOnHost(
        tmp_path / "zot",
        image,
        image.local_reference("v1"),
        zot_config(s3),
        files={"/etc/zot/htpasswd": htpasswd + b"\n"},
        secrets=s3.secret_environment(),
    ) as zot:
        yield zot


def test_zot_standin_requires_htpasswd_login(zot_on_host: ZotStandinOnHost):
    url = f"{zot_on_host.url}/v2/"

    assert http_status(url) == 401
    assert http_status(url, headers=basic_auth(USER, PASSWORD)) == 200
    assert http_status(url, headers=basic_auth(USER, "wrong-password")) == 401
    assert http_status(f"{zot_on_host.url}/livez") == 404  # distribution has no /livez


def test_zot_standin_stores_blobs_in_s3(
    zot_on_host: ZotStandinOnHost, image: ZotStandinImage, s3: S3Server, tmp_path: Path
):
    authfile = tmp_path / "auth.json"
    descriptor = os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    registry = f"127.0.0.1:{zot_on_host.port}"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"auths": {registry: {"auth": token}}}, handle)

    push = subprocess.run(
        [
            "skopeo",
            "copy",
            "--dest-tls-verify=false",
            f"--dest-authfile={authfile}",
            image.storage_reference(image.local_reference("v2")),
            f"docker://{registry}/demo/app:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert push.returncode == 0, push.stderr
    assert PASSWORD not in push.stdout + push.stderr

    keys = s3.list_objects("zot/docker/registry/v2/")
    assert any(key.startswith("zot/docker/registry/v2/blobs/sha256/") for key in keys)
    assert any("/repositories/demo/app/_manifests/tags/1/" in key for key in keys)

    log = zot_on_host.path_in_image("/var/log/zot/zot.log").read_text()
    audit = zot_on_host.path_in_image("/var/log/zot/audit.log").read_text().splitlines()
    assert "zot stand-in v1 starting" in log
    assert audit
    assert all('"http.request.method":"GET"' not in line for line in audit)
    assert any('"http.request.uri":"/v2/demo/app/manifests/1"' in line for line in audit)
    assert PASSWORD not in log
    assert s3.secret_access_key.reveal() not in log


def test_zot_standin_rejects_missing_htpasswd(image: ZotStandinImage, s3: S3Server, tmp_path):
    server = ZotStandinOnHost(
        tmp_path / "zot", image, image.local_reference("v1"), zot_config(s3), secrets={}
    )

    with pytest.raises(Exception, match="htpasswd file /etc/zot/htpasswd not found"):
        server.start()

    assert server.container is None


# --- apt proxy ------------------------------------------------------------------------------


def private_apt_options(apt_dir: Path, proxy_url: str) -> list[str]:
    for sub in ("state/lists/partial", "cache/archives/partial", "sources.list.d", "prefs"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "state" / "status").touch()
    return [
        "-o", f"Dir::State={apt_dir / 'state'}",
        "-o", f"Dir::State::status={apt_dir / 'state' / 'status'}",
        "-o", f"Dir::Cache={apt_dir / 'cache'}",
        "-o", f"Dir::Etc::SourceList={apt_dir / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={apt_dir / 'sources.list.d'}",
        "-o", f"Dir::Etc::PreferencesParts={apt_dir / 'prefs'}",
        "-o", f"Acquire::http::Proxy={proxy_url}",
        "-o", "Acquire::Languages=none",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip


def test_apt_through_proxy_caches_packages(tmp_path: Path):
    with AptProxy(tmp_path / "proxy", cache_dir=tmp_path / "cache") as proxy:
        mirror = proxy.mirrors[0]
        apt_dir = tmp_path / "apt"
        options = private_apt_options(apt_dir, proxy.url)
        (apt_dir / "sources.list").write_text(
            f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} bookworm main\n"
        )

        update = subprocess.run(
            ["apt-get", "-q", *options, "update"], capture_output=True, text=True, timeout=300
        )
        assert update.returncode == 0, update.stdout + update.stderr
        downloads = apt_dir / "downloads"
        downloads.mkdir()
        for _ in range(2):
            for old in downloads.glob("*.deb"):
                old.unlink()
            fetch = subprocess.run(
                ["apt-get", "-q", *options, "download", "hello"],
                cwd=downloads,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert fetch.returncode == 0, fetch.stdout + fetch.stderr
        stats = proxy.stats()

    host = mirror.split("//", 1)[1]
    assert (tmp_path / "cache" / host / "dists" / "bookworm" / "InRelease").is_file()
    assert list(downloads.glob("hello_*.deb"))
    assert stats["hit"] >= 1
    assert stats["rejected"] == 0


# --- a sandbox host pulls and runs the zot stand-in --------------------------------------------


def wait_for_status(host, url: str, expected: str, attempts: int = 60) -> str:
    """Poll `url` with curl in the guest until it returns `expected`; return the last status."""
    status = ""
    for _ in range(attempts):
        result = host.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url],
            check=False,
        )
        status = result.stdout.strip()
        if status == expected:
            return status
        host.run(["sleep", "0.5"])
    return status


def test_guest_pulls_and_runs_standin(
    sandbox_host_factory, image: ZotStandinImage, s3: S3Server, tmp_path: Path
):
    tag = "project-zot/zot-standin:latest"
    with LocalRegistry(tmp_path / "registry") as registry, AptProxy(tmp_path / "apt") as apt:
        registry.push(image.storage_reference(image.local_reference("v1")), tag)
        host = sandbox_host_factory()
        for port in (registry.port, s3.port, apt.port):
            host.expose_host_port(port)

        proxy = f"Acquire::http::Proxy={apt.proxy_url()}"
        host.run(["apt-get", "-q", "-o", proxy, "update"], timeout=300)
        host.run(
            [
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "-q",
                "-y",
                "-o",
                proxy,
                "install",
                "podman",
            ],
            timeout=900,
        )
        dropin = f'[[registry]]\nlocation = "{registry.address()}"\ninsecure = true\n'
        host.run(
            ["sh", "-c", "cat > /etc/containers/registries.conf.d/50-standins.conf"],
            input_text=dropin,
        )
        config = zot_config(s3)
        config["http"].update(address="127.0.0.1", port="5000")
        host.run(["mkdir", "-p", "/etc/zot", "/var/log/zot"])
        host.run(["sh", "-c", "cat > /etc/zot/config.json"], input_text=json.dumps(config))
        htpasswd = f"{USER}:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)).decode()
        host.run(["sh", "-c", "umask 077; cat > /etc/zot/htpasswd"], input_text=htpasswd + "\n")
        credentials = "".join(
            f"{name}={value.reveal()}\n" for name, value in s3.secret_environment().items()
        )
        host.run(["sh", "-c", "umask 077; cat > /etc/zot/credentials.env"], input_text=credentials)

        # NOTE: the production unit publishes 127.0.0.1:5000 from podman's bridge
        # network, where the guest's loopback (and so the exposed S3 port) is not
        # reachable. Host networking keeps this test about the image itself.
        run = host.run(
            [
                "podman",
                "run",
                "--detach",
                "--name",
                "zot",
                "--network",
                "host",
                "--env-file",
                "/etc/zot/credentials.env",
                "--volume",
                "/etc/zot:/etc/zot:ro",
                "--volume",
                "/var/log/zot:/var/log/zot",
                registry.image_reference(tag),
            ],
            check=False,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr

        assert wait_for_status(host, "http://127.0.0.1:5000/v2/", "401") == "401"
        login = host.run(
            [
                "podman",
                "login",
                "--tls-verify=false",
                "--username",
                USER,
                "--password-stdin",
                "127.0.0.1:5000",
            ],
            input_text=PASSWORD,
            check=False,
        )
        assert login.returncode == 0, login.stderr
        push = host.run(
            [
                "podman",
                "push",
                "--tls-verify=false",
                registry.image_reference(tag),
                "127.0.0.1:5000/demo/app:1",
            ],
            check=False,
            timeout=300,
        )
        assert push.returncode == 0, push.stderr
        version = host.run(["podman", "exec", "zot", "/usr/bin/zot", "--version"])
        audit = host.run(["cat", "/var/log/zot/audit.log"]).stdout

    assert version.stdout.startswith("zot stand-in v1 (")
    assert any("/repositories/demo/app/_manifests/tags/1/" in key for key in s3.list_objects())
    assert '"http.request.uri":"/v2/demo/app/manifests/1"' in audit
