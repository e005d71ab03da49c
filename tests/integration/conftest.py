"""Fixtures that boot local Debian 12 sandbox hosts (systemd-nspawn) for integration tests.

Without root every test that uses them is skipped. As root a host that
cannot be built or booted fails the test, with the step and its error.
When a test fails, the journal, cloud-init logs and console output of each
host it booted are added to its report.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from ops.sandbox import (
    DEFAULT_FORWARDS,
    SandboxError,
    SandboxHost,
    boot,
    ensure_golden,
    generate_keypair,
    get_host,
    new_name,
    public_key_of,
)
from ops.sandbox.system import require_tools

HOSTS_KEY = pytest.StashKey[list[SandboxHost]]()
LOG_LINES = 150


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(
            "sandbox hosts need root (mounts, network namespaces, systemd-nspawn); "
            "run the integration tests as root"
        )


@pytest.fixture(scope="session")
def golden() -> Path:
    """The golden root filesystem, built on first use and reused while its recipe is unchanged."""
    _require_root()
    try:
        require_tools()
        return ensure_golden(log=lambda line: print(f"golden: {line}"))
    except SandboxError as error:
        pytest.fail(f"cannot build the sandbox golden tree: {error}", pytrace=False)


@pytest.fixture(scope="session")
def sandbox_ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private key that `SandboxFactory.user_data()` authorizes for root."""
    return generate_keypair(tmp_path_factory.mktemp("sandbox-ssh") / "id_ed25519")


class SandboxFactory:
    """Boots sandbox hosts for one test or module and destroys them afterwards."""

    def __init__(self, golden: Path, ssh_key: Path, prefix: str) -> None:
        self.golden = golden
        self.ssh_key = ssh_key
        self.prefix = prefix
        self.hosts: list[SandboxHost] = []

    def user_data(self, **cloud_config: object) -> str:
        """Return #cloud-config user data with `cloud_config` that also authorizes the test key."""
        keys = [public_key_of(self.ssh_key), *cloud_config.pop("ssh_authorized_keys", [])]
        return "#cloud-config\n" + yaml.safe_dump({"ssh_authorized_keys": keys, **cloud_config})

    def __call__(
        self,
        user_data: str | None = None,
        *,
        name: str | None = None,
        meta: Mapping[str, object] | None = None,
        forwards: Sequence[int] = DEFAULT_FORWARDS,
    ) -> SandboxHost:
        """Boot a host (default user data: only the test key) and return it once systemd runs."""
        name = name or new_name(self.prefix)
        try:
            host = boot(
                name,
                self.user_data() if user_data is None else user_data,
                meta,
                forwards,
                golden=self.golden,
                ssh_key=self.ssh_key,
            )
        except SandboxError as error:
            # boot() released what it held and kept the instance directory for
            # inspection; its error already contains the console tail.
            with contextlib.suppress(SandboxError):
                get_host(name).destroy()
            pytest.fail(f"sandbox host did not boot: {error}", pytrace=False)
        self.hosts.append(host)
        return host

    def destroy_all(self) -> None:
        errors = []
        for host in self.hosts:
            # A test may have removed the host itself (sandbox.down).
            if not host.instance_dir.exists():
                continue
            try:
                host.destroy()
            except SandboxError as error:
                errors.append(str(error))
        if errors:
            pytest.fail("sandbox cleanup failed: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def sandbox_host_factory(
    request: pytest.FixtureRequest, golden: Path, sandbox_ssh_key: Path
) -> Iterator[SandboxFactory]:
    """Boot sandbox hosts within one test: `host = sandbox_host_factory(user_data)`."""
    factory = SandboxFactory(golden, sandbox_ssh_key, prefix="t")
    request.node.stash[HOSTS_KEY] = factory.hosts
    yield factory
    factory.destroy_all()


@pytest.fixture(scope="module")
def module_sandbox_host_factory(
    request: pytest.FixtureRequest, golden: Path, sandbox_ssh_key: Path
) -> Iterator[SandboxFactory]:
    """Boot sandbox hosts shared by the tests of one module; they are destroyed after it."""
    factory = SandboxFactory(golden, sandbox_ssh_key, prefix="m")
    request.node.stash[HOSTS_KEY] = factory.hosts
    yield factory
    factory.destroy_all()


def _hosts_of(item: pytest.Item) -> list[SandboxHost]:
    hosts = list(item.stash.get(HOSTS_KEY, []))
    module = item.getparent(pytest.Module)
    if module is not None:
        hosts += module.stash.get(HOSTS_KEY, [])
    return hosts


def _failure_logs(host: SandboxHost) -> list[tuple[str, str]]:
    sections = []
    for title, read in (
        ("journal", lambda: host.journal(lines=LOG_LINES)),
        ("cloud-init", lambda: host.cloud_init_logs(lines=LOG_LINES)),
    ):
        try:
            text = read()
        except SandboxError as error:
            text = f"(not available: {error})"
        sections.append((f"sandbox {host.name} {title}", text))
    sections.append((f"sandbox {host.name} console", host.console_log(LOG_LINES)))
    return sections


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Attach each sandbox host's journal, cloud-init logs and console to a failed test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        for host in _hosts_of(item):
            if host.instance_dir.exists():
                report.sections.extend(_failure_logs(host))
