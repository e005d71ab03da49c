"""Pure parts of the sandbox harness: parsing, command lines, state files. No root needed."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from ops.sandbox import forward, golden, host, keys, paths, system
from ops.sandbox.system import ProcessId, SandboxError

SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://source.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_host_mirrors_from_deb822(tmp_path):
    sources = tmp_path / "debian.sources"
    sources.write_text(SOURCES)
    assert golden.host_mirrors(sources) == (
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    )


def test_host_mirrors_missing_file(tmp_path):
    with pytest.raises(SandboxError, match="not found"):
        golden.host_mirrors(tmp_path / "absent.sources")


def test_host_mirrors_without_bookworm(tmp_path):
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie\n")
    with pytest.raises(SandboxError, match="no 'deb' stanza for suite bookworm"):
        golden.host_mirrors(sources)


def test_recipe_digest_tracks_content():
    base = golden.GoldenRecipe(mirror="http://m/debian", security_mirror="http://m/sec")
    same = golden.GoldenRecipe(mirror="http://m/debian", security_mirror="http://m/sec")
    assert base.digest() == same.digest()
    changed_packages = golden.GoldenRecipe(
        mirror="http://m/debian", security_mirror="http://m/sec", packages=("openssh-server",)
    )
    changed_files = golden.GoldenRecipe(
        mirror="http://m/debian", security_mirror="http://m/sec", files=(("/etc/x", "y\n"),)
    )
    changed_mirror = golden.GoldenRecipe(mirror="http://n/debian", security_mirror="http://m/sec")
    digests = {r.digest() for r in (base, changed_packages, changed_files, changed_mirror)}
    assert len(digests) == 4


def test_recipe_has_no_bootstrap_packages():
    recipe = golden.GoldenRecipe(mirror="http://m/debian", security_mirror="http://m/sec")
    for package in ("podman", "caddy", "ufw"):
        assert package not in recipe.packages
        assert package not in recipe.bootstrap_packages
    files = dict(recipe.files)
    assert "datasource_list: [ NoCloud, None ]" in files[golden.DATASOURCE_CFG]
    assert 'runtime = "runc"' in files[golden.CONTAINERS_CONF]
    assert files["/etc/machine-id"] == ""


def test_nspawn_argv_has_required_flags():
    argv = host.nspawn_argv(
        "zhs-a", Path("/i/root"), Path("/run/netns/zhs-a"), Path("/i/containers")
    )
    assert argv[0] == "systemd-nspawn"
    for flag in (
        "--directory=/i/root",
        "--machine=zhs-a",
        "--register=no",
        "--keep-unit",
        "--network-namespace-path=/run/netns/zhs-a",
        "--capability=CAP_NET_ADMIN",
        "--system-call-filter=add_key keyctl request_key bpf",
        "--bind=/i/containers:/var/lib/containers",
        "--resolv-conf=off",
        "--boot",
        "--console=read-only",
    ):
        assert flag in argv
    assert host.NSPAWN_ENV == {
        "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",
        "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network",
    }


def _fake_cgroups(tmp_path: Path) -> list[Path]:
    cgroups = [tmp_path / "unified", tmp_path / "systemd"]
    for cgroup in cgroups:
        cgroup.mkdir()
    return cgroups


def test_launcher_moves_into_cgroups_then_execs(tmp_path):
    cgroups = _fake_cgroups(tmp_path)
    argv = system.launcher_argv(cgroups, ["sh", "-c", 'echo "$$"'])
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    # exec keeps the pid, so the command reports the pid written to each cgroup.
    for cgroup in cgroups:
        assert (cgroup / "cgroup.procs").read_text().strip() == result.stdout.strip()


@pytest.mark.parametrize(
    ("reboots", "expected_runs", "expected_code"),
    [(0, 1, 133), (1, 2, 133), (5, 3, 0)],
)
def test_launcher_boots_again_after_reboot(tmp_path, reboots, expected_runs, expected_code):
    counter = tmp_path / "runs"
    # Exits 133 (systemd-nspawn's code for a guest reboot) twice, then 0.
    script = f'echo x >> {counter}; [ "$(wc -l < {counter})" -ge 3 ] && exit 0; exit 133'
    argv = system.launcher_argv(_fake_cgroups(tmp_path), ["sh", "-c", script], reboots=reboots)
    result = subprocess.run(argv, check=False)
    assert len(counter.read_text().splitlines()) == expected_runs
    assert result.returncode == expected_code


def test_listening_ports_reads_loopback_listeners(tmp_path):
    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n"
        "   1: 00000000:0016 00000000:0000 0A 00000000:00000000\n"
        "   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000\n"
    )
    assert forward.listening_ports(table) == {8080}


def test_forwarder_json_round_trip():
    item = forward.Forwarder(forward.TO_HOST, 18080, 3128, ProcessId(1234, 5678))
    assert forward.Forwarder.from_json(item.to_json()) == item


def test_process_id_detects_recycled_pid():
    me = ProcessId.of(os.getpid())
    assert me.alive()
    assert not ProcessId(me.pid, me.start_ticks + 1).alive()
    assert ProcessId.from_json(me.to_json()) == me


def test_mount_field_unescapes_octal():
    assert system._unescape_mount_field("/a\\040b\\134c") == "/a b\\c"


@pytest.mark.parametrize("name", ["a", "sbx-1f2e3d", "t-" + "x" * 29])
def test_check_name_accepts(name):
    assert paths.check_name(name) == name


@pytest.mark.parametrize("name", ["", "1abc", "Abc", "a_b", "a-", "a" * 32, "../x", "a b"])
def test_check_name_rejects(name):
    with pytest.raises(SandboxError, match="invalid sandbox host name"):
        paths.check_name(name)


def test_meta_data_defaults_and_overrides():
    data = yaml.safe_load(host.meta_data("alpha", None))
    assert data["local-hostname"] == "alpha"
    assert data["instance-id"].startswith("alpha-")
    assert yaml.safe_load(host.meta_data("alpha", None))["instance-id"] != data["instance-id"]
    custom = yaml.safe_load(
        host.meta_data("alpha", {"local-hostname": "beta", "public-keys": ["k"]})
    )
    assert custom["local-hostname"] == "beta"
    assert custom["public-keys"] == ["k"]


def test_host_state_saved_private(tmp_path):
    state = host.HostState(
        name="a",
        machine="zhs-a",
        netns="zhs-a",
        golden="/g",
        instance_dir=str(tmp_path),
        root="/r",
        upper="/u",
        work="/w",
        containers_dir="/c",
        runtime_dir="/run/x",
        host_netns_handle="/run/x/h",
        console_log="/l",
        cgroups=["/sys/fs/cgroup/unified/x"],
    )
    state.save()
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
    assert host.HostState.load(state.path) == state


def test_minimal_user_data_authorizes_key():
    text = keys.minimal_user_data("ssh-ed25519 AAAA test")
    assert text.startswith("#cloud-config\n")
    assert yaml.safe_load(text) == {"ssh_authorized_keys": ["ssh-ed25519 AAAA test"]}


def test_tail_keeps_last_lines():
    assert system.tail("a\n\nb\nc\n", lines=2) == "b | c"
