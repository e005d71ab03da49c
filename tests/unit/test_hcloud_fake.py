"""The fake Hetzner Cloud API: documented behaviour, test controls, and its OpenAPI checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from hcloud import APIException, Client
from hcloud.firewalls import (
    Firewall,
    FirewallResource,
    FirewallResourceLabelSelector,
    FirewallRule,
)
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import Server
from hcloud.ssh_keys import SSHKey

from tests.conftest import write_ssh_keypair
from tests.fakes.hcloud_api import (
    ROUTES,
    SPEC_PATH,
    USER_DATA_LIMIT,
    FakeHetznerCloud,
    ServerAddresses,
    ServerCreateRequest,
    load_spec,
    md5_fingerprint,
    parse_label_selector,
)

ANYWHERE = ["0.0.0.0/0", "::/0"]


@pytest.fixture
def fake():
    fake = FakeHetznerCloud(action_polls=1).start()
    yield fake
    fake.stop()
    fake.check()


@pytest.fixture
def client(fake: FakeHetznerCloud) -> Client:
    return Client(fake.token, api_endpoint=fake.endpoint, poll_interval=0, poll_max_retries=20)


def call(
    fake: FakeHetznerCloud,
    method: str,
    path: str,
    token: str | None = None,
    timeout: float = 10,
    **kwargs,
):
    """Send one raw HTTP request to the fake, bypassing hcloud-python."""
    headers = {"Authorization": f"Bearer {fake.token if token is None else token}"}
    return requests.request(
        method, fake.endpoint + path, headers=headers, timeout=timeout, **kwargs
    )


def public_key(folder: Path, name: str = "id_ed25519") -> str:
    return write_ssh_keypair(folder, name).read_text().strip()


def create_server(client: Client, name: str = "web", **kwargs):
    arguments = {
        "name": name,
        "server_type": ServerType(name="cx23"),
        "image": Image(name="debian-12"),
        "location": Location(name="fsn1"),
        **kwargs,
    }
    return client.servers.create(**arguments)


# -- the OpenAPI document ----------------------------------------------------


def test_spec_is_parsed_once_per_process():
    first = load_spec(SPEC_PATH)
    second = load_spec(SPEC_PATH)
    assert first is second
    assert first.load_seconds > 0
    # Parsing and checking the 1.3 MB document takes about 1 s on a 2-core
    # test machine; the bound only catches a cache that stopped working.
    assert first.load_seconds < 30


def test_spec_licence_is_kept_beside_the_copy():
    licence = SPEC_PATH.with_name("hcloud-openapi.LICENSE").read_text()
    assert "MIT License" in licence


def test_every_fake_route_is_in_the_spec():
    document = json.loads(SPEC_PATH.read_text())
    for route in ROUTES:
        method, path = route.split(" ", 1)
        assert path in document["paths"], route
        assert method.lower() in document["paths"][path], route


def test_fake_listens_on_loopback_only(fake: FakeHetznerCloud):
    assert fake.endpoint.startswith("http://127.0.0.1:")
    assert fake._server.server_address[0] == "127.0.0.1"


def test_reply_that_breaks_spec_is_recorded(fake, client, monkeypatch):
    original = fake._render_action

    def without_status(action):
        rendered = original(action)
        del rendered["status"]
        return rendered

    monkeypatch.setattr(fake, "_render_action", without_status)
    create_server(client)
    assert any("'status' is a required property" in v for v in fake.violations)
    with pytest.raises(AssertionError, match="does not match the OpenAPI document"):
        fake.check()
    fake.violations.clear()


def test_request_that_breaks_spec_is_recorded(fake, client, tmp_path):
    key = client.ssh_keys.create(name="k", public_key=public_key(tmp_path))
    # A bound SSH key makes hcloud-python send its integer id; the document
    # types ssh_keys as a list of strings.
    create_server(client, ssh_keys=[key])
    assert len(fake.violations) == 1
    assert "request does not match" in fake.violations[0]
    assert "ssh_keys/0: 1 is not of type 'string'" in fake.violations[0]
    fake.violations.clear()


def test_unknown_path_is_recorded_and_not_found(fake):
    reply = call(fake, "GET", "/no_such_thing")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"
    assert any("/no_such_thing" in v for v in fake.violations)
    fake.violations.clear()


# -- authentication, errors, rate limits --------------------------------------


def test_wrong_token_gets_401_unauthorized(fake):
    reply = call(fake, "GET", "/servers", token="wrong")
    assert reply.status_code == 401
    assert reply.json() == {
        "error": {"code": "unauthorized", "message": "unable to authenticate", "details": None}
    }


def test_every_reply_carries_rate_limit_headers(fake):
    reply = call(fake, "GET", "/locations")
    assert reply.headers["RateLimit-Limit"] == "3600"
    assert int(reply.headers["RateLimit-Remaining"]) == 3599
    assert int(reply.headers["RateLimit-Reset"]) >= int(time.time())


def test_exhausted_rate_limit_gets_429(fake):
    fake.set_rate_limit(3600, remaining=1)
    assert call(fake, "GET", "/locations").status_code == 200
    reply = call(fake, "GET", "/locations")
    assert reply.status_code == 429
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"
    assert reply.headers["RateLimit-Remaining"] == "0"
    assert int(reply.headers["RateLimit-Reset"]) > int(time.time())


def test_fail_next_injects_documented_status(fake):
    fake.fail_next("GET /servers", "resource_unavailable", times=2)
    for _ in range(2):
        reply = call(fake, "GET", "/servers")
        assert reply.status_code == 412
        assert reply.json()["error"]["code"] == "resource_unavailable"
    assert call(fake, "GET", "/servers").status_code == 200


def test_fail_next_rejects_unknown_route(fake):
    with pytest.raises(ValueError, match="unknown route"):
        fake.fail_next("GET /server", "not_found")


def test_injected_429_is_retried_by_hcloud(fake, client):
    client._client._retry_interval_func = lambda retries: 0.0
    fake.fail_next("GET /locations", "rate_limit_exceeded", times=5)
    assert client.locations.get_by_name("fsn1").name == "fsn1"
    assert len(fake.requests_to("GET /locations")) == 6


def test_fail_after_create_creates_then_errs(fake, client):
    fake.fail_after_create("POST /servers", "server_error")
    with pytest.raises(APIException) as caught:
        create_server(client)
    assert caught.value.code == "server_error"
    assert [s["name"] for s in fake.servers.values()] == ["web"]


def test_delayed_reply_times_out_client(fake):
    fake.delay_next("GET /locations", 0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(fake, "GET", "/locations", timeout=0.1)
    assert call(fake, "GET", "/locations").status_code == 200


def test_unknown_id_gets_not_found(fake, client):
    with pytest.raises(APIException) as caught:
        client.servers.get_by_id(999)
    assert caught.value.code == "not_found"


def test_invalid_json_gets_json_error(fake):
    reply = requests.post(
        fake.endpoint + "/ssh_keys",
        data=b"{",
        headers={"Authorization": f"Bearer {fake.token}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "json_error"
    fake.violations.clear()  # the broken body does not match the document either


# -- pagination and filters ---------------------------------------------------


def test_pagination_meta_and_link_header(fake, tmp_path):
    for index in range(30):
        fake.add_ssh_key(f"key-{index:02d}", public_key(tmp_path, f"k{index}"))
    reply = call(fake, "GET", "/ssh_keys", params={"per_page": 25, "page": 1})
    assert reply.json()["meta"]["pagination"] == {
        "page": 1,
        "per_page": 25,
        "previous_page": None,
        "next_page": 2,
        "last_page": 2,
        "total_entries": 30,
    }
    assert 'rel="next"' in reply.headers["Link"]
    assert "page=2&per_page=25" in reply.headers["Link"]
    second = call(fake, "GET", "/ssh_keys", params={"per_page": 25, "page": 2}).json()
    assert len(second["ssh_keys"]) == 5
    assert second["meta"]["pagination"]["next_page"] is None
    assert second["meta"]["pagination"]["previous_page"] == 1


def test_per_page_is_capped_at_50(fake, tmp_path):
    for index in range(55):
        fake.add_ssh_key(f"key-{index:02d}", public_key(tmp_path, f"k{index}"))
    reply = call(fake, "GET", "/ssh_keys", params={"per_page": 100}).json()
    assert len(reply["ssh_keys"]) == 50
    assert reply["meta"]["pagination"]["per_page"] == 50


def test_hcloud_get_all_walks_every_page(fake, client, tmp_path):
    for index in range(55):
        fake.add_ssh_key(f"key-{index:02d}", public_key(tmp_path, f"k{index}"))
    assert len(client.ssh_keys.get_all()) == 55


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("env=prod", {"env": "prod"}, True),
        ("env==prod", {"env": "prod"}, True),
        ("env=prod", {"env": "dev"}, False),
        ("env!=prod", {"env": "dev"}, True),
        ("env!=prod", {}, True),
        ("env", {"env": ""}, True),
        ("!env", {"env": ""}, False),
        ("!env", {}, True),
        ("env in (dev,staging)", {"env": "staging"}, True),
        ("env in (dev,staging)", {"env": "prod"}, False),
        ("env notin (dev,staging)", {"env": "prod"}, True),
        ("env notin (dev,staging)", {}, True),
        ("a/b=c,d", {"a/b": "c", "d": "x"}, True),
        ("a/b=c,d", {"a/b": "c"}, False),
        ("a/b=c,!d", {"a/b": "c"}, True),
    ],
)
def test_label_selector(selector, labels, expected):
    assert parse_label_selector(selector)(labels) is expected


@pytest.mark.parametrize("selector", ["", "a=b,", "a b c", "=x"])
def test_label_selector_rejects_bad_terms(selector):
    with pytest.raises(ValueError):
        parse_label_selector(selector)


def test_invalid_label_selector_gets_invalid_input(fake):
    reply = call(fake, "GET", "/servers", params={"label_selector": "a b c"})
    assert reply.status_code == 422
    assert reply.json()["error"]["details"]["fields"][0]["name"] == "label_selector"


def test_servers_filtered_by_name_and_labels(fake, client):
    create_server(client, "one", labels={"app": "zot", "team": "ops"})
    create_server(client, "two", labels={"app": "zot"})
    create_server(client, "three", labels={"app": "web"})
    assert sorted(s.name for s in client.servers.get_all(label_selector="app=zot")) == [
        "one",
        "two",
    ]
    assert [s.name for s in client.servers.get_all(label_selector="app=zot,team")] == ["one"]
    assert client.servers.get_by_name("three").labels == {"app": "web"}


def test_reserved_label_prefix_is_rejected(fake, client):
    with pytest.raises(APIException) as caught:
        create_server(client, labels={"hetzner.cloud/x": "y"})
    assert caught.value.code == "invalid_input"


# -- catalogue ----------------------------------------------------------------


def test_image_name_resolves_per_architecture(fake, client):
    x86 = client.images.get_by_name_and_architecture("debian-12", "x86")
    arm = client.images.get_by_name_and_architecture("debian-12", "arm")
    assert x86.id != arm.id
    response = create_server(client, server_type=ServerType(name="cax11"))
    assert response.server.image.id == arm.id


def test_server_type_locations_report_stock(fake, client):
    fake.set_out_of_stock("cx23", "nbg1")
    server_type = client.server_types.get_by_name("cx23")
    availability = {entry.location.name: entry.available for entry in server_type.locations}
    assert availability == {"fsn1": True, "nbg1": False, "hel1": True}


def test_deprecated_type_carries_per_location_deprecation(fake, client):
    server_type = client.server_types.get_by_name("cx22")
    assert all(entry.deprecation is not None for entry in server_type.locations)
    assert client.server_types.get_by_name("cx23").locations[0].deprecation is None


# -- SSH keys -----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_fingerprint_matches_ssh_keygen(tmp_path):
    path = write_ssh_keypair(tmp_path)
    output = subprocess.run(
        ["ssh-keygen", "-l", "-E", "md5", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"MD5:{md5_fingerprint(path.read_text())} " in output


def test_ssh_key_found_by_fingerprint(fake, client, tmp_path):
    key = client.ssh_keys.create(name="laptop", public_key=public_key(tmp_path))
    assert client.ssh_keys.get_by_fingerprint(key.fingerprint).name == "laptop"
    assert client.ssh_keys.get_by_fingerprint("00:" * 15 + "00") is None


def test_ssh_key_name_and_fingerprint_are_unique(fake, client, tmp_path):
    text = public_key(tmp_path)
    client.ssh_keys.create(name="laptop", public_key=text)
    with pytest.raises(APIException) as same_name:
        client.ssh_keys.create(name="laptop", public_key=public_key(tmp_path, "other"))
    assert same_name.value.code == "uniqueness_error"
    assert same_name.value.details == {"fields": [{"name": "name"}]}
    with pytest.raises(APIException) as same_key:
        client.ssh_keys.create(name="desktop", public_key=text)
    assert same_key.value.code == "uniqueness_error"
    assert same_key.value.details == {"fields": [{"name": "public_key"}]}


def test_malformed_public_key_is_invalid_input(fake, client):
    with pytest.raises(APIException) as caught:
        client.ssh_keys.create(name="bad", public_key="ssh-ed25519 not-base64!")
    assert caught.value.code == "invalid_input"


def test_ssh_key_delete(fake, client, tmp_path):
    key = client.ssh_keys.create(name="laptop", public_key=public_key(tmp_path))
    client.ssh_keys.delete(key)
    assert fake.ssh_keys == {}


# -- servers and actions --------------------------------------------------------


def test_ssh_key_means_no_root_password(fake, client, tmp_path):
    client.ssh_keys.create(name="laptop", public_key=public_key(tmp_path))
    response = create_server(client, ssh_keys=[SSHKey(name="laptop")])
    assert response.root_password is None
    assert response.action.command == "create_server"
    assert [a.command for a in response.next_actions] == ["start_server"]
    assert response.server.status == "initializing"


def test_no_ssh_key_gets_root_password(fake, client):
    assert create_server(client).root_password


def test_server_runs_after_its_actions_finish(fake, client):
    response = create_server(client)
    response.action.wait_until_finished()
    for action in response.next_actions:
        action.wait_until_finished()
    assert client.servers.get_by_id(response.server.id).status == "running"


def test_action_stays_running_for_configured_polls(tmp_path):
    with FakeHetznerCloud(action_polls=3) as fake:
        client = Client(fake.token, api_endpoint=fake.endpoint, poll_interval=0)
        action = create_server(client).action
        statuses = []
        for _ in range(3):
            action.reload()
            statuses.append(action.status)
        assert statuses == ["running", "running", "success"]
    fake.check()


def test_actions_finish_at_once_with_zero_polls():
    with FakeHetznerCloud(action_polls=0) as fake:
        client = Client(fake.token, api_endpoint=fake.endpoint, poll_interval=0)
        response = create_server(client)
        assert response.action.status == "success"
        assert response.action.finished is not None
    fake.check()


def test_actions_listed_by_ids(fake, client):
    response = create_server(client)
    ids = [response.action.id, response.next_actions[0].id]
    reply = call(fake, "GET", "/actions", params=[("id", i) for i in ids]).json()
    assert [a["id"] for a in reply["actions"]] == ids


def test_fail_action_ends_in_error(fake, client):
    fake.fail_action("create_server", code="action_failed", message="boom")
    response = create_server(client)
    with pytest.raises(Exception, match="boom"):
        response.action.wait_until_finished()
    assert fake.actions[response.action.id]["error"] == {"code": "action_failed", "message": "boom"}


def test_stalled_action_times_out(fake, client):
    fake.stall_action("create_server")
    response = create_server(client)
    with pytest.raises(Exception, match="timed out"):
        response.action.wait_until_finished(max_retries=5)


def test_user_data_limit_is_32_kib(fake, client):
    create_server(client, "fits", user_data="x" * USER_DATA_LIMIT)
    with pytest.raises(APIException) as caught:
        create_server(client, "too-big", user_data="x" * (USER_DATA_LIMIT + 1))
    assert caught.value.code == "invalid_input"
    assert caught.value.details == {"fields": [{"name": "user_data", "messages": ["is too long"]}]}
    assert [s["name"] for s in fake.servers.values()] == ["fits"]


def test_user_data_limit_counts_utf8_bytes(fake, client):
    with pytest.raises(APIException) as caught:
        create_server(client, user_data="é" * (USER_DATA_LIMIT // 2 + 1))
    assert caught.value.code == "invalid_input"


def test_out_of_stock_type_gets_412(fake, client):
    fake.set_out_of_stock("cx23", "fsn1")
    with pytest.raises(APIException) as caught:
        create_server(client)
    assert caught.value.code == "resource_unavailable"
    assert fake.requests_to("POST /servers")[-1].status == 412
    create_server(client, location=Location(name="nbg1"))


def test_server_name_is_unique(fake, client):
    create_server(client)
    with pytest.raises(APIException) as caught:
        create_server(client)
    assert caught.value.code == "uniqueness_error"
    assert fake.requests_to("POST /servers")[-1].status == 409


def test_type_not_offered_in_location_is_invalid_input(fake, client):
    with pytest.raises(APIException) as caught:
        create_server(client, location=Location(name="ash"))
    assert caught.value.code == "invalid_input"


def test_default_addresses_are_documentation_ranges(fake, client):
    server = create_server(client).server
    assert server.public_net.ipv4.ip.startswith("203.0.113.")
    assert server.public_net.ipv6.ip.startswith("2001:db8:")


def test_create_hook_gets_request_and_sets_addresses(fake, client, tmp_path):
    seen: list[ServerCreateRequest] = []

    def boot(request: ServerCreateRequest) -> ServerAddresses:
        seen.append(request)
        return ServerAddresses(ipv4="127.0.0.1", ipv6_network=None)

    fake.on_server_create(boot)
    text = public_key(tmp_path)
    client.ssh_keys.create(name="laptop", public_key=text)
    server = create_server(
        client, ssh_keys=[SSHKey(name="laptop")], user_data="#cloud-config\n", labels={"a": "b"}
    ).server
    assert seen[0].user_data == "#cloud-config\n"
    assert seen[0].ssh_public_keys == (text,)
    assert seen[0].labels == {"a": "b"}
    assert seen[0].architecture == "x86"
    assert server.public_net.ipv4.ip == "127.0.0.1"


def test_failing_create_hook_gives_500_and_is_recorded(fake, client):
    def broken(request: ServerCreateRequest) -> None:
        raise RuntimeError("sandbox did not boot")

    fake.on_server_create(broken)
    with pytest.raises(APIException) as caught:
        create_server(client)
    assert caught.value.code == "server_error"
    assert fake.servers == {}
    assert "sandbox did not boot" in fake.hook_errors[0]
    fake.hook_errors.clear()


def test_delete_server_calls_hook_and_detaches_firewall(fake, client):
    deleted = []
    fake.on_server_delete(lambda server_id, name: deleted.append((server_id, name)))
    firewall = client.firewalls.create(name="fw").firewall
    server = create_server(client, firewalls=[Firewall(id=firewall.id)]).server
    action = client.servers.delete(server)
    assert action.command == "delete_server"
    action.wait_until_finished()
    assert deleted == [(server.id, "web")]
    assert fake.servers == {}
    assert fake.firewalls[firewall.id]["applied_to"] == []


# -- firewalls ------------------------------------------------------------------


def test_firewall_rules_and_application(fake, client):
    rules = [
        FirewallRule("in", "tcp", ["198.51.100.0/24"], port="22"),
        FirewallRule("in", "icmp", ANYWHERE),
    ]
    firewall = client.firewalls.create(name="fw", rules=rules, labels={"a": "b"}).firewall
    server = create_server(client).server
    actions = client.firewalls.apply_to_resources(
        firewall, [FirewallResource(type="server", server=Server(id=server.id))]
    )
    assert [a.command for a in actions] == ["apply_firewall"]
    for action in actions:
        action.wait_until_finished()
    applied = client.servers.get_by_id(server.id).public_net.firewalls
    assert [(f.firewall.id, f.status) for f in applied] == [(firewall.id, "applied")]

    with pytest.raises(APIException) as again:
        client.firewalls.apply_to_resources(
            firewall, [FirewallResource(type="server", server=Server(id=server.id))]
        )
    assert again.value.code == "firewall_already_applied"

    actions = client.firewalls.set_rules(firewall, rules[:1])
    assert [a.command for a in actions] == ["set_firewall_rules", "apply_firewall"]
    assert len(client.firewalls.get_by_id(firewall.id).rules) == 1

    with pytest.raises(APIException) as in_use:
        client.firewalls.delete(firewall)
    assert in_use.value.code == "resource_in_use"

    client.firewalls.remove_from_resources(
        firewall, [FirewallResource(type="server", server=Server(id=server.id))]
    )
    assert client.servers.get_by_id(server.id).public_net.firewalls == []
    client.firewalls.delete(firewall)
    assert fake.firewalls == {}


def test_firewall_rule_without_port_for_tcp_is_invalid(fake, client):
    with pytest.raises(APIException) as caught:
        client.firewalls.create(name="fw", rules=[FirewallRule("in", "tcp", ANYWHERE)])
    assert caught.value.code == "invalid_input"


def test_firewall_applied_by_label_selector(fake, client):
    server = create_server(client, labels={"role": "registry"}).server
    response = client.firewalls.create(
        name="fw",
        resources=[
            FirewallResource(
                type="label_selector",
                label_selector=FirewallResourceLabelSelector(selector="role=registry"),
            )
        ],
    )
    firewall = client.firewalls.get_by_id(response.firewall.id)
    resources = firewall.applied_to[0].applied_to_resources
    assert [r.server.id for r in resources] == [server.id]


def test_firewall_name_is_unique(fake, client):
    client.firewalls.create(name="fw")
    with pytest.raises(APIException) as caught:
        client.firewalls.create(name="fw")
    assert caught.value.code == "uniqueness_error"


def test_requests_are_recorded_without_headers(fake, client):
    client.locations.get_all()
    recorded = fake.requests_to("GET /locations")
    assert recorded[0].query == {"page": ["1"], "per_page": ["50"]}
    assert fake.token not in repr(fake.requests)
