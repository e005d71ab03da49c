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


# --- a whole deployment on a sandbox host -------------------------------------------


@pytest.fixture(scope="session")
def standin_stack(golden: Path, tmp_path_factory: pytest.TempPathFactory):
    """The apt proxy, Caddy release server, image registry with the zot stand-in, and S3."""
    from ops.sandbox.standins.stack import StandinStack

    stack = StandinStack(tmp_path_factory.mktemp("standins"))
    try:
        stack.start()
    except SandboxError as error:
        pytest.fail(f"cannot start the stand-ins: {error}", pytrace=False)
    yield stack
    stack.stop()


class Deployment:
    """A registry deployed with `ops.deploy.deploy(provider="local")` onto a sandbox host."""

    def __init__(self, settings, source, stack, state_dir: Path, work_dir: Path) -> None:
        self.settings = settings
        self.source = source
        self.stack = stack
        self.state_dir = state_dir
        self.work_dir = work_dir
        self.outcome = None
        self.output = ""

    @property
    def host(self) -> SandboxHost:
        from ops.sandbox.local_provider import host_name

        return get_host(host_name(self.settings))

    def deploy(self, **options):
        import io

        from ops.converge import Timeouts
        from ops.deploy import deploy
        from ops.progress import Progress

        stream = io.StringIO()
        options.setdefault("timeouts", Timeouts(ssh=120, cloud_init=900, zot=120, https=120))
        try:
            self.outcome = deploy(
                self.settings,
                provider="local",
                source=self.source,
                progress=Progress(stream),
                local_options={"expose": self.stack.expose_map()},
                **options,
            )
        finally:
            self.output = stream.getvalue()
            print(self.output)
        return self.outcome

    def password(self, user: str) -> str:
        return (self.state_dir / self.settings.name / "passwords" / user).read_text().strip()

    def caddy_ca(self) -> str:
        from ops.converge import CADDY_LOCAL_ROOT_CERT

        return self.host.run(["cat", CADDY_LOCAL_ROOT_CERT]).stdout

    def client(self, name: str = "client"):
        from tests.integration.registry_client import RegistryClient

        return RegistryClient(
            self.settings.domain, self.host.port(443), self.caddy_ca(), self.work_dir / name
        )


def make_deployment_settings(stack, key_dir: Path, name: str, **extra):
    from ops.config import parse_settings
    from tests.conftest import write_ssh_keypair

    public_key = write_ssh_keypair(key_dir)
    raw = {
        "name": name,
        "domain": "registry.test",
        "acme_email": "ops@example.com",
        "ssh": {"public_key": str(public_key)},
        "users": [
            {"name": "admin", "role": "admin"},
            {"name": "ci", "role": "push"},
            {"name": "viewer", "role": "read"},
        ],
    }
    for section, values in stack.settings_tree().items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    for section, values in extra.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return parse_settings(raw)


@pytest.fixture(scope="module")
def local_deployment(
    request: pytest.FixtureRequest,
    standin_stack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    """A registry deployed on a sandbox host for the tests of one module, removed afterwards."""
    from ops.sandbox.local_provider import destroy, host_name
    from ops.secrets import SecretSource

    work_dir = tmp_path_factory.mktemp("deployment")
    state_dir = work_dir / "state"
    previous = os.environ.get("ZOT_HETZNER_STATE_DIR")
    os.environ["ZOT_HETZNER_STATE_DIR"] = str(state_dir)
    module_name = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    # A random suffix keeps two runs on one machine from sharing a sandbox host.
    name = ("d" + module_name.removeprefix("test"))[:20].rstrip("-") + "-" + os.urandom(2).hex()
    settings = make_deployment_settings(standin_stack, work_dir, name)
    secrets = {key: value.reveal() for key, value in standin_stack.secret_environment().items()}
    deployment = Deployment(
        settings, SecretSource(environ=secrets, file_values={}), standin_stack, state_dir, work_dir
    )
    hosts: list[SandboxHost] = []
    request.node.stash[HOSTS_KEY] = hosts
    try:
        try:
            deployment.deploy()
        finally:
            with contextlib.suppress(SandboxError):
                hosts.append(get_host(host_name(settings)))
        yield deployment
    finally:
        with contextlib.suppress(SandboxError):
            destroy(settings)
        if previous is None:
            os.environ.pop("ZOT_HETZNER_STATE_DIR", None)
        else:
            os.environ["ZOT_HETZNER_STATE_DIR"] = previous
