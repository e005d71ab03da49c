"""diagnose's local facts: DNS, and the Cloud Firewall through the fake Hetzner API."""

from __future__ import annotations

from typing import Any

import pytest
from hcloud import Client
from hcloud.firewalls import Firewall, FirewallRule
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType

from ops.diagnose import local
from ops.diagnose.checks import network
from ops.diagnose.result import Inputs, LocalFacts
from tests.fakes.hcloud_api import FakeHetznerCloud
from tests.unit.test_diagnose_checks import expectations, healthy_facts

DOMAIN = "cr.example.test"
ANYWHERE = ["0.0.0.0/0", "::/0"]


@pytest.fixture
def fake():
    api = FakeHetznerCloud(action_polls=0).start()
    yield api
    api.stop()
    api.check()


@pytest.fixture
def client(fake: FakeHetznerCloud) -> Client:
    return Client(fake.token, api_endpoint=fake.endpoint, poll_interval=0, poll_max_retries=20)


def create_server(client: Client, name: str, rules: list[FirewallRule] | None) -> Any:
    firewalls = []
    if rules is not None:
        firewall = client.firewalls.create(name=f"{name}-fw", rules=rules).firewall
        firewalls = [Firewall(id=firewall.id)]
    response = client.servers.create(
        name=name,
        server_type=ServerType(name="cx23"),
        image=Image(name="debian-12"),
        location=Location(name="fsn1"),
        firewalls=firewalls,
    )
    return client.servers.get_by_id(response.server.id)


def web_rules(*ports: str) -> list[FirewallRule]:
    return [FirewallRule("in", "tcp", ANYWHERE, port=port) for port in ports]


def judge_firewall(facts: dict[str, Any]):
    local_facts = LocalFacts(cloud_firewall=facts)
    return network.cloud_firewall(Inputs(healthy_facts(), local_facts, expectations()))


def test_firewall_with_web_ports_passes(client: Client):
    server = create_server(client, "registry", web_rules("22", "80", "443"))
    facts = local.cloud_firewall(client, server.id, "registry", set())
    assert facts["server"] == "registry"
    assert [firewall["name"] for firewall in facts["firewalls"]] == ["registry-fw"]
    assert judge_firewall(facts).status == "ok"


def test_firewall_without_443_fails_with_hcloud_command(client: Client):
    server = create_server(client, "registry", web_rules("22", "80"))
    facts = local.cloud_firewall(client, None, "registry", set())
    result = judge_firewall(facts)
    assert result.status == "fail"
    assert "443/tcp from 0.0.0.0/0" in result.evidence
    assert result.fix.startswith("hcloud firewall add-rule registry-fw --direction in")
    assert "--port 443" in result.fix
    assert server.id


def test_port_range_rule_admits_both_ports(client: Client):
    create_server(client, "registry", web_rules("80-443"))
    facts = local.cloud_firewall(client, None, "registry", set())
    assert judge_firewall(facts).status == "ok"


def test_server_without_firewall_is_not_filtered(client: Client):
    create_server(client, "registry", None)
    facts = local.cloud_firewall(client, None, "registry", set())
    assert facts["firewalls"] == []
    assert judge_firewall(facts).status == "ok"


def test_server_found_by_address(client: Client):
    server = create_server(client, "other-name", web_rules("80", "443"))
    facts = local.cloud_firewall(client, None, "registry", {server.public_net.ipv4.ip})
    assert facts["server"] == "other-name"


def test_unknown_server_is_an_error_not_a_crash(client: Client):
    facts = local.cloud_firewall(client, None, "registry", {"198.51.100.1"})
    assert "no server named registry" in facts["error"]
    assert judge_firewall(facts).status == "warn"


def test_rejected_token_becomes_warning(fake: FakeHetznerCloud):
    bad = Client("wrong-token", api_endpoint=fake.endpoint, poll_interval=0, poll_max_retries=1)
    facts = local.cloud_firewall(bad, None, "registry", set())
    assert "HCLOUD_TOKEN" in facts["error"]
    assert judge_firewall(facts).status == "warn"


def test_https_from_here_needs_an_address():
    assert local.https_from_here(DOMAIN, {"ipv4": [], "ipv6": []}, "acme") is None


def test_resolve_reports_unknown_domain():
    found = local.resolve("does-not-exist.invalid")
    assert found["ipv4"] == []
    assert found["ipv6"] == []
    assert found["error"]


def test_resolve_localhost():
    found = local.resolve("localhost")
    assert "127.0.0.1" in found["ipv4"]
    assert found["error"] is None
