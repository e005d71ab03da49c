"""inv deploy against the fake Hetzner Cloud API, whose servers are real sandbox hosts.

The fake checks every request and reply against Hetzner's OpenAPI document.
Its server create boots a sandbox host with the user data it was given; the
server's documentation-range address is mapped to that host's loopback
forwarders. Each test interrupts or breaks one stage and then checks that
the next deploy converges to a single working server.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import pytest

from ops.converge import Timeouts
from ops.deploy import deploy, destroy
from ops.errors import OpsError
from ops.progress import Progress
from ops.sandbox import SandboxError, boot, get_host
from ops.secrets import SecretSource
from tests.fakes.hcloud_api import FakeHetznerCloud, ServerAddresses, ServerCreateRequest
from tests.integration.conftest import HOSTS_KEY, make_deployment_settings
from tests.unit.test_hetzner_provision import client_for

pytestmark = pytest.mark.integration

FAST = Timeouts(ssh=120, cloud_init=900, zot=120, https=120)


class Interrupted(Exception):
    """Stands for Ctrl-C (or a lost laptop lid) at a given deploy stage."""


class InterruptingProgress(Progress):
    def __init__(self, stream, stage_prefix: str) -> None:
        super().__init__(stream)
        self.stage_prefix = stage_prefix

    def stage(self, name: str) -> None:
        super().stage(name)
        if name.startswith(self.stage_prefix):
            raise Interrupted(name)


class Cloud:
    """The fake API with sandbox hosts behind its servers."""

    def __init__(self, fake: FakeHetznerCloud, stack, key, hosts: list) -> None:
        self.fake = fake
        self.stack = stack
        self.key = key
        self.hosts = hosts
        self.by_address: dict[str, str] = {}
        fake.on_server_create(self._create)
        fake.on_server_delete(self._delete)

    def _create(self, request: ServerCreateRequest) -> ServerAddresses:
        name = f"hz-{request.server_id}"
        host = boot(
            name,
            request.user_data or "",
            meta={"public-keys": list(request.ssh_public_keys)},
            forwards=(22, 80, 443),
            ssh_key=self.key,
            expose=self.stack.expose_map(),
        )
        self.hosts.append(host)
        address = f"203.0.113.{request.server_id % 250 + 1}"
        self.by_address[address] = name
        return ServerAddresses(ipv4=address, ipv6_network=None)

    def _delete(self, server_id: int, name: str) -> None:
        with contextlib.suppress(SandboxError):
            get_host(f"hz-{server_id}").destroy()

    def endpoint(self, address: str, port: int) -> tuple[str, int]:
        host = get_host(self.by_address[address])
        return "127.0.0.1", host.port(22 if port not in (80, 443) else port)

    def servers(self) -> list[dict]:
        return list(self.fake.servers.values())


@pytest.fixture
def cloud(request, standin_stack, tmp_path, monkeypatch) -> Iterator[Cloud]:
    monkeypatch.setenv("ZOT_HETZNER_STATE_DIR", str(tmp_path / "state"))
    settings = make_deployment_settings(standin_stack, tmp_path, "hz")
    hosts: list = []
    request.node.stash[HOSTS_KEY] = hosts
    fake = FakeHetznerCloud(action_polls=1).start()
    cloud = Cloud(fake, standin_stack, settings.ssh.private_key, hosts)
    cloud.settings = settings
    cloud.client = client_for(fake)
    secrets = {k: v.reveal() for k, v in standin_stack.secret_environment().items()}
    cloud.source = SecretSource(environ={**secrets, "HCLOUD_TOKEN": fake.token}, file_values={})
    try:
        yield cloud
    finally:
        try:
            destroy(cloud.settings, source=cloud.source, client=cloud.client, remove_firewall=True)
        finally:
            for host in hosts:
                if host.instance_dir.exists():
                    host.destroy()
            fake.stop()
        fake.check()


def run_deploy(cloud: Cloud, progress: Progress | None = None, timeouts: Timeouts = FAST):
    stream = io.StringIO()
    try:
        return deploy(
            cloud.settings,
            source=cloud.source,
            client=cloud.client,
            endpoint_map=cloud.endpoint,
            progress=progress or Progress(stream),
            timeouts=timeouts,
        )
    finally:
        print(stream.getvalue())


def post_count(cloud: Cloud) -> int:
    return sum(1 for request in cloud.fake.requests if request.method == "POST")


def test_deploy_end_to_end_then_no_change(cloud):
    first = run_deploy(cloud)
    assert first.record.created
    assert first.record.ipv4.startswith("203.0.113.")
    assert len(cloud.servers()) == 1
    posts = post_count(cloud)

    second = run_deploy(cloud)
    assert second.record.created is False
    assert second.changes == []
    assert post_count(cloud) == posts
    assert len(cloud.servers()) == 1


@pytest.mark.parametrize(
    "stage",
    [
        "creating",
        "waiting for SSH",
        "waiting for cloud-init",
        "uploading secrets",
        "starting Caddy",
        "waiting for https",
    ],
)
def test_interrupted_deploy_converges(cloud, stage):
    with pytest.raises(Interrupted):
        run_deploy(cloud, progress=InterruptingProgress(io.StringIO(), stage))
    outcome = run_deploy(cloud)
    assert len(cloud.servers()) == 1
    assert outcome.registry_url == "https://registry.test"
    assert run_deploy(cloud).changes == []


def test_lost_create_reply_rolled_back_then_converges(cloud):
    cloud.fake.fail_after_create("POST /servers", "timeout")
    with pytest.raises(OpsError):
        run_deploy(cloud)
    assert cloud.servers() == []
    assert run_deploy(cloud).record.created


def test_failed_create_action_rolled_back(cloud):
    cloud.fake.fail_action("create_server")
    with pytest.raises(OpsError) as caught:
        run_deploy(cloud)
    assert "create_server" in str(caught.value) or "failed" in str(caught.value)
    assert cloud.servers() == []
    assert run_deploy(cloud).record.created


def test_out_of_stock_creates_nothing(cloud):
    cloud.fake.set_out_of_stock("cx23", "fsn1")
    with pytest.raises(OpsError) as caught:
        run_deploy(cloud)
    assert "cx23" in str(caught.value)
    assert "fsn1" in str(caught.value)
    assert post_count(cloud) == 0
    cloud.fake.set_out_of_stock("cx23", "fsn1", out_of_stock=False)
    assert run_deploy(cloud).record.created


def test_ssh_timeout_then_converges(cloud):
    with pytest.raises(OpsError, match="no SSH session"):
        run_deploy(cloud, timeouts=Timeouts(ssh=0, cloud_init=900, zot=120, https=120))
    outcome = run_deploy(cloud)
    assert outcome.record.created is False
    assert "uploaded /etc/zot/credentials.env" in outcome.changes


def test_failed_first_boot_reported(cloud):
    from ops.sandbox.standins.caddy_releases import CaddyFault

    caddy = cloud.stack.caddy
    caddy.inject_fault(CaddyFault.WRONG_CHECKSUM, caddy.versions[0])
    try:
        with pytest.raises(OpsError) as caught:
            run_deploy(cloud)
    finally:
        caddy.reset()
    message = str(caught.value)
    assert "the first boot failed" in message
    assert "SHA-512" in message
    assert "destroy and deploy again" in message
    destroy(cloud.settings, source=cloud.source, client=cloud.client)
    outcome = run_deploy(cloud)
    assert outcome.record.created
