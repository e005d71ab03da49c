"""Plan, apply and destroy against the fake Hetzner Cloud API, errors and rollback included."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

import pytest

from ops.config import Settings, parse_settings
from ops.errors import ConfigError, OpsError
from ops.hetzner import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_RUN,
    TOKEN_REJECTED,
    HetznerError,
    ServerTypeUnavailableError,
    destroy,
    firewall_rules,
    make_client,
    plan,
    rules_match,
    ssh_fingerprint,
)
from ops.provision import RollbackError, apply
from ops.render import USER_DATA_LIMIT
from ops.secrets import Secret
from tests.conftest import write_ssh_keypair
from tests.fakes.hcloud_api import FakeHetznerCloud, md5_fingerprint

USER_DATA = "#cloud-config\nruncmd:\n  - [touch, /root/booted]\n"
READ_ONLY = {"GET"}


@pytest.fixture
def fake():
    fake = FakeHetznerCloud(action_polls=1).start()
    yield fake
    fake.stop()
    fake.check()


def client_for(fake: FakeHetznerCloud, token: str | None = None):
    client = make_client(
        Secret(fake.token if token is None else token),
        endpoint=fake.endpoint,
        poll_interval=0,
        poll_max_retries=10,
    )
    # NOTE: hcloud-python 2.27 has no public setting for the pause between its
    # retries (1 s, doubling up to 60 s). The tests zero it so that retried 429s stay fast.
    client._client._retry_interval_func = lambda retries: 0.0
    return client


@pytest.fixture
def client(fake: FakeHetznerCloud):
    return client_for(fake)


@pytest.fixture
def settings(base_settings: dict) -> Settings:
    return parse_settings(base_settings)


def changed(base_settings: dict, **sections: dict[str, Any]) -> Settings:
    raw = copy.deepcopy(base_settings)
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return parse_settings(raw)


def names(table: dict[int, dict[str, Any]]) -> list[str]:
    return sorted(item["name"] for item in table.values())


def methods(fake: FakeHetznerCloud) -> set[str]:
    return {request.method for request in fake.requests}


def deploy(settings: Settings, client, user_data: str = USER_DATA):
    return apply(plan(settings, client), user_data, client)


# -- plan ---------------------------------------------------------------------


def test_plan_on_empty_project_creates_all(fake, client, settings):
    result = plan(settings, client)
    assert result.problems == ()
    assert result.changes == [
        f'upload SSH key "registry-key" ({result.fingerprint})',
        'create firewall "registry-fw"',
        'create server "registry"',
    ]
    assert methods(fake) == READ_ONLY


def test_plan_prints_readable_lines(fake, client, settings):
    text = str(plan(settings, client))
    assert text.splitlines()[0] == 'Hetzner Cloud plan for deployment "registry":'
    assert 'ssh key   create   "registry-key"' in text
    assert (
        'firewall  create   "registry-fw": 22/tcp from anywhere; 80/tcp from anywhere; '
        "443/tcp from anywhere; icmp from anywhere"
    ) in text
    assert (
        'server    create   "registry", cx23 (x86, 2 vCPU, 4 GB), in fsn1, image debian-12' in text
    )


def test_fingerprint_matches_the_api(settings):
    text = settings.ssh.public_key.read_text()
    assert ssh_fingerprint(text.strip()) == md5_fingerprint(text)


def test_firewall_rules_restrict_ssh(base_settings):
    settings = changed(base_settings, ssh={"allowed_cidrs": ["198.51.100.0/24"], "port": 2222})
    rules = firewall_rules(settings.ssh.allowed_cidrs, settings.ssh.port)
    ssh = [(r.port, r.source_ips) for r in rules if r.description == "SSH"]
    assert ssh == [("22", ["198.51.100.0/24"]), ("2222", ["198.51.100.0/24"])]
    web = {r.port: r.source_ips for r in rules if r.port in ("80", "443")}
    assert web == {"80": ["0.0.0.0/0", "::/0"], "443": ["0.0.0.0/0", "::/0"]}
    assert [r.protocol for r in rules if r.port is None] == ["icmp"]


def test_plan_finds_key_by_fingerprint(fake, client, settings):
    fake.add_ssh_key("laptop", settings.ssh.public_key.read_text())
    result = plan(settings, client)
    assert result.ssh_key is not None
    assert result.ssh_key.name == "laptop"
    assert not any("SSH key" in change for change in result.changes)


def test_plan_flags_key_name_taken(fake, client, settings, tmp_path):
    other = write_ssh_keypair(tmp_path, "other").read_text()
    fake.add_ssh_key("registry-key", other)
    result = plan(settings, client)
    assert len(result.problems) == 1
    assert result.problems[0].startswith('an SSH key named "registry-key"')


def test_plan_flags_foreign_server_name(fake, client, settings):
    foreign = fake.add_server("registry")
    result = plan(settings, client)
    assert result.server is None
    assert result.problems == (
        f'a server named "registry" (id {foreign["id"]}) exists but was not made by zot-hetzner '
        "(its labels differ); delete or rename it, or set deployment.name to another name",
    )


def test_plan_flags_foreign_firewall(fake, client, settings):
    client.firewalls.create(name="registry-fw")
    result = plan(settings, client)
    assert "was not made by zot-hetzner" in result.problems[0]


def test_plan_flags_unknown_server_type(fake, client, base_settings):
    result = plan(changed(base_settings, server={"type": "cx99"}), client)
    assert result.problems == (
        "server type cx99 not found; set deployment.server.type to one that "
        "`hcloud server-type list` shows",
    )


def test_plan_flags_deprecated_server_type(fake, client, base_settings):
    result = plan(changed(base_settings, server={"type": "cx22"}), client)
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert problem.startswith("server type cx22 is deprecated in fsn1 (orderable until ")
    assert "fsn1 offers cpx22, cx23, cx33" in problem


def test_plan_flags_type_not_in_location(fake, client, base_settings):
    result = plan(changed(base_settings, server={"location": "ash"}), client)
    assert result.problems == (
        "server type cx23 is not offered in ash; it is offered in fsn1, nbg1, hel1 "
        "(set deployment.server.location or deployment.server.type)",
    )


def test_plan_flags_out_of_stock(fake, client, settings):
    fake.set_out_of_stock("cx23", "fsn1")
    result = plan(settings, client)
    assert result.problems == (
        "server type cx23 is out of stock in fsn1; cx23 is available in nbg1, hel1; fsn1 "
        "offers cpx22, cx33, cx43 (set deployment.server.location or deployment.server.type)",
    )


def test_apply_rejects_plan_with_problems(fake, client, settings):
    fake.set_out_of_stock("cx23", "fsn1")
    with pytest.raises(ConfigError, match="out of stock in fsn1"):
        deploy(settings, client)
    assert methods(fake) == READ_ONLY


def test_arm_type_gets_arm_image(fake, client, base_settings):
    settings = changed(base_settings, server={"type": "cax11"})
    result = plan(settings, client)
    assert result.image.architecture == "arm"
    deploy(settings, client)
    server = next(iter(fake.servers.values()))
    assert next(i for i in fake.images if i["id"] == server["image_id"])["architecture"] == "arm"


# -- apply ----------------------------------------------------------------------


def test_apply_creates_key_firewall_server(fake, client, settings):
    result = deploy(settings, client)

    assert names(fake.ssh_keys) == ["registry-key"]
    assert names(fake.firewalls) == ["registry-fw"]
    assert names(fake.servers) == ["registry"]
    server = next(iter(fake.servers.values()))
    assert server["status"] == "running"
    assert server["user_data"] == USER_DATA
    assert server["server_type"] == "cx23"
    assert server["location"] == "fsn1"
    assert server["labels"][LABEL_DEPLOYMENT] == "registry"
    assert server["labels"][LABEL_MANAGED_BY] == "zot-hetzner"
    assert server["ssh_key_ids"] == list(fake.ssh_keys)
    assert [f["id"] for f in server["firewalls"]] == list(fake.firewalls)
    firewall = next(iter(fake.firewalls.values()))
    assert firewall["labels"][LABEL_DEPLOYMENT] == "registry"

    assert result.server.id == server["id"]
    assert result.status == "running"
    assert result.ipv4 == server["ipv4"]
    assert result.ipv4.startswith("203.0.113.")
    assert result.ipv6_network == server["ipv6"]
    assert result.ipv6.endswith("::1")
    assert [r.kind for r in result.created] == ["ssh-key", "firewall", "server"]


def test_apply_waits_for_every_action(fake, client, settings):
    deploy(settings, client)
    statuses = {a["command"]: a["status"] for a in fake.actions.values()}
    assert statuses == {"create_server": "success", "start_server": "success"}


def test_second_apply_creates_nothing(fake, client, settings):
    first = deploy(settings, client)
    second_plan = plan(settings, client)
    assert second_plan.changes == []
    assert second_plan.lines()[-1] == "  no changes"
    before = len(fake.requests)
    second = apply(second_plan, USER_DATA, client)
    assert {r.method for r in fake.requests[before:]} == READ_ONLY
    assert second.server == first.server
    assert second.created == ()
    assert second.changed == ()
    assert len(fake.servers) == 1


def test_existing_key_is_reused(fake, client, settings):
    key = fake.add_ssh_key("laptop", settings.ssh.public_key.read_text())
    result = deploy(settings, client)
    assert names(fake.ssh_keys) == ["laptop"]
    assert next(iter(fake.servers.values()))["ssh_key_ids"] == [key["id"]]
    assert "ssh-key" not in [r.kind for r in result.created]


def test_drift_is_reported_not_changed(fake, client, settings, base_settings):
    deploy(settings, client)
    drifted = changed(base_settings, server={"type": "cx33", "location": "nbg1"})
    result = plan(drifted, client)
    assert [(d.setting, d.current, d.wanted) for d in result.differences] == [
        ("deployment.server.type", "cx23", "cx33"),
        ("deployment.server.location", "fsn1", "nbg1"),
    ]
    assert result.changes == []
    text = str(result)
    assert (
        "server    differs  deployment.server.type: cx23 on the server, cx33 in the settings (not changed)"
        in text
    )
    assert "note: the server keeps its type, location and image" in text
    before = len(fake.requests)
    apply(result, USER_DATA, client)
    assert {r.method for r in fake.requests[before:]} == READ_ONLY
    assert next(iter(fake.servers.values()))["server_type"] == "cx23"


def test_image_drift_is_reported(fake, client, settings):
    labels = {LABEL_DEPLOYMENT: "registry", LABEL_MANAGED_BY: "zot-hetzner"}
    fake.add_server("registry", image="debian-13", labels=labels)
    result = plan(settings, client)
    assert [(d.setting, d.current) for d in result.differences] == [
        ("deployment.server.image", "debian-13")
    ]


def test_firewall_rules_drift_is_updated(fake, client, settings, base_settings):
    deploy(settings, client)
    narrowed = changed(base_settings, ssh={"allowed_cidrs": ["198.51.100.0/24"]})
    result = plan(narrowed, client)
    assert result.firewall_rules_differ
    assert result.changes == ['set the rules of firewall "registry-fw"']
    assert "firewall  update   rules 22/tcp from anywhere;" in str(result)
    outcome = apply(result, USER_DATA, client)
    assert outcome.changed == ('set the rules of firewall "registry-fw"',)
    rules = next(iter(fake.firewalls.values()))["rules"]
    assert rules[0]["source_ips"] == ["198.51.100.0/24"]
    assert plan(narrowed, client).changes == []


def test_rules_match_ignores_order_and_description():
    wanted = firewall_rules(["198.51.100.0/24"])
    shuffled = list(reversed(wanted))
    for rule in shuffled:
        rule.description = None
    assert rules_match(shuffled, wanted)
    assert not rules_match(wanted[1:], wanted)


def test_missing_firewall_is_applied(fake, client, settings):
    result = deploy(settings, client)
    firewall_id = next(iter(fake.firewalls))
    fake.servers[result.server.id]["firewalls"].clear()
    fake.firewalls[firewall_id]["applied_to"].clear()
    again = plan(settings, client)
    assert again.changes == ['apply firewall "registry-fw" to server "registry"']
    outcome = apply(again, USER_DATA, client)
    assert outcome.changed == ('applied firewall "registry-fw" to server "registry"',)
    assert [f["id"] for f in fake.servers[result.server.id]["firewalls"]] == [firewall_id]


def test_oversized_user_data_is_rejected_first(fake, client, settings):
    with pytest.raises(ConfigError, match=r"the user data is 32769 bytes; .* at most 32768"):
        deploy(settings, client, user_data="x" * (USER_DATA_LIMIT + 1))
    assert methods(fake) == READ_ONLY


# -- destroy ----------------------------------------------------------------------


def test_destroy_removes_server_keeps_firewall(fake, client, settings):
    deploy(settings, client)
    result = destroy(settings, client, remove_firewall=False)
    assert [r.kind for r in result.removed] == ["server"]
    assert fake.servers == {}
    assert names(fake.firewalls) == ["registry-fw"]
    assert names(fake.ssh_keys) == ["registry-key"]
    assert [reason for _, reason in result.kept] == [
        "firewall removal was not requested",
        "SSH key removal was not requested",
    ]


def test_destroy_removes_firewall_and_key(fake, client, settings):
    deploy(settings, client)
    result = destroy(settings, client, remove_firewall=True, remove_ssh_key=True)
    assert [r.kind for r in result.removed] == ["server", "firewall", "ssh-key"]
    assert fake.servers == {}
    assert fake.firewalls == {}
    assert fake.ssh_keys == {}
    assert destroy(settings, client, remove_firewall=True).lines() == ["nothing to remove"]


def test_destroy_leaves_foreign_resources(fake, client, settings):
    fake.add_server("registry")
    fake.add_server("other", labels={LABEL_DEPLOYMENT: "other", LABEL_MANAGED_BY: "zot-hetzner"})
    key = fake.add_ssh_key("laptop", settings.ssh.public_key.read_text())
    client.firewalls.create(name="registry-fw")
    result = destroy(settings, client, remove_firewall=True, remove_ssh_key=True)
    assert result.removed == ()
    assert names(fake.servers) == ["other", "registry"]
    assert names(fake.firewalls) == ["registry-fw"]
    assert list(fake.ssh_keys) == [key["id"]]


# -- errors -------------------------------------------------------------------------


def test_destroy_reports_firewall_in_use(fake, client, settings):
    deploy(settings, client)
    firewall_id = next(iter(fake.firewalls))
    fake.add_server("neighbour", firewalls=[{"firewall": firewall_id}])
    with pytest.raises(HetznerError) as caught:
        destroy(settings, client, remove_firewall=True)
    assert str(caught.value) == (
        f'deleting firewall "registry-fw" (id {firewall_id}) failed: it is still in use '
        f"(422 resource_in_use: firewall {firewall_id} is still applied to a resource); "
        "remove it from the other servers in the Hetzner Console first"
    )
    assert caught.value.code == "resource_in_use"
    assert names(fake.servers) == ["neighbour"]


def test_rejected_token_message(fake, settings):
    with pytest.raises(ConfigError) as caught:
        plan(settings, client_for(fake, token="not-the-token"))
    assert str(caught.value) == TOKEN_REJECTED
    assert str(caught.value) == (
        "HCLOUD_TOKEN was rejected by the API (401); create a read/write token in the "
        "Hetzner Console under Security > API tokens"
    )


def test_rate_limit_after_library_retries(fake, client, settings):
    fake.fail_next("GET /ssh_keys", "rate_limit_exceeded", times=6)
    with pytest.raises(HetznerError) as caught:
        plan(settings, client)
    assert caught.value.code == "rate_limit_exceeded"
    assert str(caught.value).startswith(
        "the Hetzner Cloud API rate limit was exceeded (429) while reading the SSH keys, and "
        "hcloud-python's retries with backoff did not get through;"
    )
    assert len(fake.requests_to("GET /ssh_keys")) == 6


def test_rate_limit_within_retries_succeeds(fake, client, settings):
    fake.fail_next("GET /ssh_keys", "rate_limit_exceeded", times=5)
    assert plan(settings, client).problems == ()


def test_rate_limit_on_create_rolls_back(fake, client, settings):
    fake.fail_next("POST /servers", "rate_limit_exceeded", times=6)
    with pytest.raises(HetznerError) as caught:
        deploy(settings, client)
    message = str(caught.value)
    assert 'rate limit was exceeded (429) while creating server "registry"' in message
    assert 'rolled back: ssh-key "registry-key" (id ' in message
    assert '), firewall "registry-fw" (id ' in message
    assert fake.servers == {}
    assert fake.firewalls == {}
    assert fake.ssh_keys == {}


def test_out_of_stock_at_create_rolls_back(fake, client, settings):
    planned = plan(settings, client)
    fake.set_out_of_stock("cx23", "fsn1")
    with pytest.raises(ServerTypeUnavailableError) as caught:
        apply(planned, USER_DATA, client)
    message = str(caught.value)
    assert message.startswith(
        "server type cx23 is out of stock in fsn1 (412 resource_unavailable: "
    )
    assert "cx23 is available in nbg1, hel1; fsn1 offers cpx22, cx33, cx43" in message
    assert "rolled back: " in message
    assert caught.value.code == "resource_unavailable"
    assert fake.servers == {}
    assert fake.firewalls == {}
    assert fake.ssh_keys == {}


def test_name_taken_at_create_rolls_back(fake, client, settings):
    planned = plan(settings, client)
    foreign = fake.add_server("registry")
    with pytest.raises(HetznerError) as caught:
        apply(planned, USER_DATA, client)
    message = str(caught.value)
    assert message.startswith(
        'creating server "registry" failed: the name is already taken in this Hetzner Cloud '
        "project (409 uniqueness_error: "
    )
    assert "set deployment.name to another name" in message
    assert list(fake.servers) == [foreign["id"]]
    assert fake.firewalls == {}
    assert fake.ssh_keys == {}


def test_user_data_rejected_by_api_rolls_back(fake, client, settings):
    fake.fail_next(
        "POST /servers",
        "invalid_input",
        message="invalid input in field 'user_data': is too long",
        details={"fields": [{"name": "user_data", "messages": ["is too long"]}]},
    )
    with pytest.raises(HetznerError) as caught:
        deploy(settings, client)
    assert str(caught.value).startswith(
        'creating server "registry" failed: the API rejected the user data (invalid input in '
        "field 'user_data': is too long); it accepts at most 32 KiB"
    )
    assert fake.servers == {}
    assert fake.firewalls == {}
    assert fake.ssh_keys == {}


def test_failed_action_rolls_back(fake, client, settings):
    fake.fail_action("create_server", message="host failure")
    with pytest.raises(HetznerError) as caught:
        deploy(settings, client)
    message = str(caught.value)
    assert message.startswith('creating server "registry" failed: action create_server (id ')
    assert ") ended with action_failed: host failure; rolled back: " in message
    assert fake.servers == {}
    assert fake.firewalls == {}
    assert fake.ssh_keys == {}


def test_action_timeout_rolls_back(fake, client, settings):
    fake.stall_action("start_server")
    with pytest.raises(HetznerError) as caught:
        deploy(settings, client)
    message = str(caught.value)
    assert message.startswith(
        'timed out while creating server "registry": action start_server (id '
    )
    assert caught.value.code == "action_timeout"
    assert fake.servers == {}
    assert fake.firewalls == {}
    assert fake.ssh_keys == {}


def test_lost_create_reply_is_found_and_removed(fake, client, settings):
    # The gateway times out after the server was made; hcloud-python retries
    # the POST, which then finds the name taken.
    fake.fail_after_create("POST /servers", "timeout")
    with pytest.raises(HetznerError) as caught:
        deploy(settings, client)
    assert caught.value.code == "lost_reply"
    assert re.fullmatch(
        r'creating server "registry" failed: the API reported an error although it had created '
        r"the server, so the retried request found the name taken; run the command again; "
        r'rolled back: ssh-key "registry-key" \(id \d+\), firewall "registry-fw" \(id \d+\), '
        r'server "registry" \(id \d+\)',
        str(caught.value),
    )
    assert [r.status for r in fake.requests_to("POST /servers")] == [504, 409]
    assert fake.servers == {}
    assert fake.firewalls == {}
    assert fake.ssh_keys == {}


def test_failed_rollback_names_what_remains(fake, client, settings):
    fake.fail_action("create_server")
    fake.fail_next("DELETE /servers/{id}", "server_error")
    with pytest.raises(RollbackError) as caught:
        deploy(settings, client)
    server_id = next(iter(fake.servers))
    firewall_id = next(iter(fake.firewalls))
    assert [(r.kind, r.id) for r in caught.value.remaining] == [
        ("server", server_id),
        ("firewall", firewall_id),
    ]
    message = str(caught.value)
    assert "ended with action_failed" in message
    assert 'rolled back: ssh-key "registry-key"' in message
    assert (
        f'the rollback failed, these remain: server "registry" (id {server_id}), firewall '
        f'"registry-fw" (id {firewall_id}); remove them with: hcloud server delete {server_id} '
        f"&& hcloud firewall delete {firewall_id}"
    ) in message
    assert fake.ssh_keys == {}


def test_rollback_keeps_preexisting_resources(fake, client, settings):
    key = fake.add_ssh_key("laptop", settings.ssh.public_key.read_text())
    fake.fail_action("create_server")
    with pytest.raises(HetznerError):
        deploy(settings, client)
    assert list(fake.ssh_keys) == [key["id"]]
    assert fake.servers == {}
    assert fake.firewalls == {}


def test_created_resources_carry_run_label(fake, client, settings):
    deploy(settings, client)
    runs = {
        item["labels"][LABEL_RUN]
        for table in (fake.servers, fake.firewalls, fake.ssh_keys)
        for item in table.values()
    }
    assert len(runs) == 1


def test_request_timeout_message(fake, settings):
    client = make_client(
        Secret(fake.token),
        endpoint=fake.endpoint,
        poll_interval=0,
        poll_max_retries=10,
        request_timeout=0.1,
    )
    client._client._retry_interval_func = lambda retries: 0.0
    fake.delay_next("GET /ssh_keys", 0.5, times=6)
    with pytest.raises(HetznerError) as caught:
        plan(settings, client)
    assert str(caught.value) == (
        f"timed out while reading the SSH keys: no reply from {fake.endpoint} in time "
        "(ReadTimeout); run the command again"
    )
    assert caught.value.code == "timeout"


def test_unreachable_api_message(settings):
    client = make_client(
        Secret("token"), endpoint="http://127.0.0.1:9/v1", poll_interval=0, poll_max_retries=1
    )
    with pytest.raises(HetznerError) as caught:
        plan(settings, client)
    assert str(caught.value).startswith(
        "cannot reach http://127.0.0.1:9/v1 while reading the SSH keys (ConnectionError)"
    )


# -- secrets ----------------------------------------------------------------------------


def test_token_never_in_output(fake, client, settings, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    result = plan(settings, client)
    seen += [str(result), repr(result)]
    outcome = apply(result, USER_DATA, client)
    seen += [repr(outcome), *outcome.lines()]
    seen += destroy(settings, client, remove_firewall=True, remove_ssh_key=True).lines()

    fake.fail_action("create_server")
    for attempt in (
        lambda: deploy(settings, client),
        lambda: plan(settings, client_for(fake, token=fake.token + "x")),
    ):
        with pytest.raises(OpsError) as caught:
            attempt()
        seen += [str(caught.value), repr(caught.value), repr(caught.value.__cause__)]

    seen.append(repr(client_for(fake)))
    captured = capsys.readouterr()
    seen += [captured.out, captured.err, caplog.text]
    seen += [repr(record.args) for record in caplog.records]
    for text in seen:
        assert fake.token not in text
