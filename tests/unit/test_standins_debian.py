"""Parsing of apt sources for the apt proxy's mirror list."""

from __future__ import annotations

from pathlib import Path

from ops.sandbox.standins.debian import (
    AptSource,
    host_apt_sources,
    mirror_prefixes,
    parse_deb822_sources,
    parse_one_line_sources,
)

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://deb.debian.org/debian-security/
Suites: bookworm-security
Components: main contrib

Types: deb-src
URIs: http://sources.example.org/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example.org/debian
Suites: bookworm
Components: main
"""


def test_deb822_reads_enabled_deb_entries():
    sources = parse_deb822_sources(DEB822)

    assert [source.uri for source in sources] == [
        "http://deb.debian.org/debian",
        "http://deb.debian.org/debian-security",
    ]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert sources[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert sources[1].components == ("main", "contrib")
    assert sources[1].signed_by is None


def test_deb822_continuation_lines_join():
    text = "Types: deb\nURIs: http://a.example/debian\n http://b.example/debian\nSuites: x\n"

    uris = [source.uri for source in parse_deb822_sources(text)]

    assert uris == ["http://a.example/debian", "http://b.example/debian"]


def test_one_line_sources_with_options():
    text = """\
# comment
deb [arch=amd64 signed-by=/etc/k.gpg] http://mirror.example/debian/ bookworm main contrib
deb-src http://mirror.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main  # trailing comment
deb broken
"""
    sources = parse_one_line_sources(text)

    assert sources == [
        AptSource("http://mirror.example/debian", ("bookworm",), ("main", "contrib"), "/etc/k.gpg"),
        AptSource("http://security.example/debian-security", ("bookworm-security",), ("main",)),
    ]
    assert sources[0].options == {"arch": "amd64", "signed-by": "/etc/k.gpg"}


def test_host_sources_read_both_formats(tmp_path: Path):
    sources_list = tmp_path / "sources.list"
    sources_list.write_text("deb http://one.example/debian bookworm main\n")
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "b.sources").write_text(DEB822)
    (parts / "a.list").write_text("deb https://two.example/debian bookworm main\n")
    (parts / "ignored.txt").write_text("deb http://ignored.example/debian bookworm main\n")

    uris = [source.uri for source in host_apt_sources(sources_list, parts)]

    assert uris == [
        "http://one.example/debian",
        "https://two.example/debian",
        "http://deb.debian.org/debian",
        "http://deb.debian.org/debian-security",
    ]


def test_mirror_prefixes_keep_http_once():
    sources = [
        AptSource("http://a.example/debian", ("x",), ("main",)),
        AptSource("https://b.example/debian", ("x",), ("main",)),
        AptSource("http://a.example/debian", ("y",), ("main",)),
    ]

    assert mirror_prefixes(sources) == ["http://a.example/debian"]
