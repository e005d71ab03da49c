"""diagnose parsers: ufw status, ss listings and X.509 certificates."""

from __future__ import annotations

import pytest

from ops.diagnose import parsers
from tests.unit.test_diagnose_checks import DOMAIN, NOW, UFW_HEALTHY, make_certificate

UFW_MIXED = """Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), disabled (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    198.51.100.0/24            # zot-hetzner ssh
80,443/tcp (WWW Full)      ALLOW IN    Anywhere
8000:8100/tcp              DENY IN     Anywhere
203.0.113.10 5000/tcp      ALLOW IN    10.0.0.0/8
Anywhere                   ALLOW IN    192.0.2.7
443                        LIMIT IN    Anywhere (v6)
80/tcp (v6)                REJECT IN   Anywhere (v6)
53/udp                     ALLOW OUT   Anywhere
"""


def test_ufw_status_rules():
    status = parsers.parse_ufw_status(UFW_MIXED)
    assert status.active
    assert status.default_incoming == "deny"
    assert len(status.rules) == 8
    www = status.rules[1]
    assert (www.ports, www.proto, www.v6, www.action) == (
        ((80, 80), (443, 443)),
        "tcp",
        False,
        "ALLOW",
    )
    assert status.rules[2].ports == ((8000, 8100),)
    assert status.rules[3].ports == ((5000, 5000),)
    assert status.rules[3].source == "10.0.0.0/8"
    assert status.rules[4].ports is None
    assert status.rules[5].proto is None
    assert status.rules[5].v6
    assert status.rules[7].direction == "OUT"


def test_ufw_comment_is_not_a_column():
    rule = parsers.parse_ufw_status(UFW_HEALTHY).rules[0]
    assert rule.source == "Anywhere"


@pytest.mark.parametrize(
    ("port", "v6", "access"),
    [
        (80, False, "open"),  # WWW Full profile
        (443, False, "open"),
        (8050, False, "closed"),  # DENY range
        (22, False, "restricted"),  # one network only
        (443, True, "open"),  # LIMIT counts as open
        (80, True, "closed"),  # REJECT
        (9999, False, "restricted"),  # only 192.0.2.7 may reach every port
    ],
)
def test_ufw_port_access(port: int, v6: bool, access: str):
    status = parsers.parse_ufw_status(UFW_MIXED)
    assert parsers.ufw_port_access(status, port, "tcp", v6)[0] == access


def test_ufw_first_matching_rule_wins():
    text = UFW_HEALTHY.replace(
        "80/tcp                     ALLOW IN    Anywhere",
        "80                         DENY IN     Anywhere\n80/tcp                     ALLOW IN    Anywhere",
    )
    status = parsers.parse_ufw_status(text)
    assert parsers.ufw_port_access(status, 80, "tcp", False)[0] == "closed"


def test_ufw_udp_rule_does_not_open_tcp():
    status = parsers.parse_ufw_status(
        "Status: active\nDefault: deny (incoming), allow (outgoing)\n\n"
        "To Action From\n-- ------ ----\n443/udp                    ALLOW IN    Anywhere\n"
    )
    assert parsers.ufw_port_access(status, 443, "tcp", False)[0] == "closed"


def test_ufw_default_allow_opens_everything():
    status = parsers.parse_ufw_status(
        "Status: active\nDefault: allow (incoming), allow (outgoing), disabled (routed)\n"
    )
    assert parsers.ufw_port_access(status, 443, "tcp", True)[0] == "open"


def test_ufw_inactive_filters_nothing():
    status = parsers.parse_ufw_status("Status: inactive\n")
    assert not status.active
    assert parsers.ufw_port_access(status, 443, "tcp", False)[0] == "open"


def test_restricted_access_lists_sources():
    status = parsers.parse_ufw_status(UFW_MIXED)
    assert parsers.ufw_port_access(status, 22, "tcp", False) == (
        "restricted",
        ["198.51.100.0/24", "192.0.2.7"],
    )


def test_listening_sockets():
    text = (
        "LISTEN 0      4096       127.0.0.1:5000       0.0.0.0:*\n"
        "LISTEN 0      4096               *:443              *:*\n"
        "LISTEN 0      4096            [::]:80            [::]:*\n"
        "LISTEN 0      4096           [::1]:5000          [::]:*\n"
        "LISTEN 0      4096   127.0.0.53%lo:53         0.0.0.0:*\n"
        "garbage\n"
    )
    assert parsers.parse_listening(text) == [
        ("127.0.0.1", 5000),
        ("*", 443),
        ("::", 80),
        ("::1", 5000),
        ("127.0.0.53", 53),
    ]


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("127.0.1.1", True), ("*", False), ("0.0.0.0", False)],  # noqa: S104
)
def test_is_loopback(address: str, loopback: bool):
    assert parsers.is_loopback(address) is loopback


def test_certificate_fields():
    certificate = parsers.parse_certificate(make_certificate(not_after=NOW + 86400))
    assert certificate.not_after == NOW + 86400
    assert certificate.issuer == "R11, Let's Encrypt"
    assert certificate.dns_names == (DOMAIN,)
    assert certificate.covers(DOMAIN)
    assert certificate.covers(DOMAIN.upper() + ".")
    assert not certificate.covers("other.example.com")


def test_wildcard_certificate_covers_one_label():
    certificate = parsers.parse_certificate(make_certificate(domain="*.example.com"))
    assert certificate.covers(DOMAIN)
    assert not certificate.covers("a.cr.example.com")
    assert not certificate.covers("example.com")


def test_invalid_certificate_raises_value_error():
    with pytest.raises(ValueError):
        parsers.parse_certificate("bm90IGEgY2VydGlmaWNhdGU=")


def test_server_addresses_keep_global_scope():
    addresses = [
        {"address": "127.0.0.1", "scope": "host"},
        {"address": "203.0.113.10", "scope": "global"},
        {"address": "fe80::1", "scope": "link"},
    ]
    assert parsers.server_addresses(addresses) == {"203.0.113.10"}
