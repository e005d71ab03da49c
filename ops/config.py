"""The settings model of one deployment, read through Invoke's configuration.

Invoke merges, in rising priority: the defaults set in tasks.py, the project's
invoke.yaml, a file given with `inv -f FILE`, and INVOKE_DEPLOYMENT_* environment
variables. The key `deployment` of the merged configuration is validated here
into a frozen Settings object; nothing touches a server or the API before that
succeeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from . import validate
from .errors import ConfigError

CONFIG_KEY = "deployment"

Domain = Annotated[str, AfterValidator(validate.domain)]
Cidr = Annotated[str, AfterValidator(validate.cidr)]
Port = Annotated[int, AfterValidator(validate.port)]
HttpUrl = Annotated[str, AfterValidator(validate.http_url)]

ZOT_VERSION = "v2.1.14"
CADDY_DOWNLOAD_BASE = "https://github.com/caddyserver/caddy/releases/download"
CADDY_RELEASES_API = "https://api.github.com/repos/caddyserver/caddy/releases/latest"
# Keys that look like secrets are rejected with a pointer to the right place.
_SECRET_KEYS = {
    "hcloud_token",
    "token",
    "password",
    "aws_access_key_id",
    "aws_secret_access_key",
    "access_key",
    "secret_key",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SSHSettings(_Section):
    public_key: Annotated[Path, AfterValidator(validate.ssh_public_key)] = Path(
        "~/.ssh/id_ed25519.pub"
    )
    # Defaults to the public key's path without ".pub".
    private_key: Path | None = None
    user: Annotated[str, AfterValidator(validate.ssh_user)] = "root"
    port: Port = 22
    allowed_cidrs: list[Cidr] = Field(default_factory=lambda: ["0.0.0.0/0", "::/0"], min_length=1)

    @model_validator(mode="after")
    def _derive_private_key(self) -> SSHSettings:
        if self.private_key is None:
            derived = self.public_key.with_suffix("") if self.public_key.suffix == ".pub" else None
            object.__setattr__(self, "private_key", derived)
        else:
            object.__setattr__(self, "private_key", self.private_key.expanduser())
        return self


class ServerSettings(_Section):
    type: Annotated[str, AfterValidator(validate.server_type)] = "cx23"
    image: Annotated[str, AfterValidator(validate.server_image)] = "debian-12"
    location: Annotated[str, AfterValidator(validate.server_location)] = "fsn1"

    @property
    def architecture(self) -> Literal["amd64", "arm64"]:
        """CPU architecture of the server type: Hetzner's CAX types are Ampere (arm64)."""
        return "arm64" if self.type.startswith("cax") else "amd64"


class StorageSettings(_Section):
    bucket: Annotated[str, AfterValidator(validate.bucket)]
    location: Annotated[str, AfterValidator(validate.storage_location)] = "fsn1"
    # Hetzner accepts the location as the SigV4 region.
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]{2,32}$")
    # Defaults to https://<location>.your-objectstorage.com.
    endpoint: HttpUrl | None = None
    # Path-style requests (endpoint/bucket/key) work for every bucket name,
    # dotted ones included, where virtual-host style needs a matching TLS name.
    path_style: bool = True
    root_directory: str = Field(default="/zot", pattern=r"^/[A-Za-z0-9._/-]*$")

    @model_validator(mode="after")
    def _derive_endpoint(self) -> StorageSettings:
        if self.region is None:
            object.__setattr__(self, "region", self.location)
        if self.endpoint is None:
            object.__setattr__(self, "endpoint", f"https://{self.location}.your-objectstorage.com")
        return self

    @property
    def secure(self) -> bool:
        return self.endpoint is not None and self.endpoint.startswith("https://")


class ZotSettings(_Section):
    # Defaults to ghcr.io/project-zot/zot-linux-<arch>:<ZOT_VERSION> for the server's CPU.
    image: Annotated[str, AfterValidator(validate.image_reference)] | None = None
    insecure_registries: list[Annotated[str, AfterValidator(validate.registry_host)]] = Field(
        default_factory=list
    )
    metrics: bool = False
    ui: bool = True
    log_level: Literal["debug", "info", "warn", "error"] = "info"


class CaddySettings(_Section):
    version: Annotated[str, AfterValidator(validate.caddy_version)] = "latest"
    download_base: HttpUrl = CADDY_DOWNLOAD_BASE
    releases_api: HttpUrl = CADDY_RELEASES_API


class BootstrapSettings(_Section):
    apt_proxy: HttpUrl | None = None
    unattended_upgrades: bool = True


class User(_Section):
    name: Annotated[str, AfterValidator(validate.username)]
    role: Annotated[str, AfterValidator(validate.role)] = "read"


class Settings(_Section):
    """Everything that describes one deployment, secrets excepted."""

    name: Annotated[str, AfterValidator(validate.deployment_name)] = "registry"
    domain: Domain
    acme_email: Annotated[str, AfterValidator(validate.email)]
    acme_staging: bool = False
    # "internal" makes Caddy issue from its own CA: for a local host with no ACME reach.
    tls: Literal["acme", "internal"] = "acme"
    ssh: SSHSettings = Field(default_factory=SSHSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings
    zot: ZotSettings = Field(default_factory=ZotSettings)
    caddy: CaddySettings = Field(default_factory=CaddySettings)
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    users: list[User] = Field(default_factory=lambda: [User(name="admin", role="admin")])

    @field_validator("users")
    @classmethod
    def _check_users(cls, users: list[User]) -> list[User]:
        names = [user.name for user in users]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"has duplicate user names ({', '.join(duplicates)}); names must be unique"
            )
        if not any(user.role == "admin" for user in users):
            raise ValueError("has no admin; at least one user needs role admin")
        return users

    @model_validator(mode="after")
    def _derive_image(self) -> Settings:
        if self.zot.image is None:
            image = f"ghcr.io/project-zot/zot-linux-{self.server.architecture}:{ZOT_VERSION}"
            object.__setattr__(self.zot, "image", image)
        return self

    @property
    def registry_url(self) -> str:
        return f"https://{self.domain}"

    def user(self, name: str) -> User:
        for user in self.users:
            if user.name == name:
                return user
        raise ConfigError(f"user {name!r} is not in deployment.users; add it there first")


def defaults() -> dict[str, Any]:
    """Return the configuration defaults that tasks.py registers with Invoke.

    Invoke applies INVOKE_DEPLOYMENT_* environment variables only to keys it
    already knows, so every scalar setting is listed, required ones as None.
    """
    return {
        "name": "registry",
        "domain": None,
        "acme_email": None,
        "acme_staging": False,
        "tls": "acme",
        "ssh": {
            "public_key": "~/.ssh/id_ed25519.pub",
            "private_key": None,
            "user": "root",
            "port": 22,
        },
        "server": {"type": "cx23", "image": "debian-12", "location": "fsn1"},
        "storage": {
            "bucket": None,
            "location": "fsn1",
            "region": None,
            "endpoint": None,
            "path_style": True,
            "root_directory": "/zot",
        },
        "zot": {"image": None, "metrics": False, "ui": True, "log_level": "info"},
        "caddy": {
            "version": "latest",
            "download_base": CADDY_DOWNLOAD_BASE,
            "releases_api": CADDY_RELEASES_API,
        },
        "bootstrap": {"apt_proxy": None, "unattended_upgrades": True},
    }


def _plain(value: Any) -> Any:
    """Convert Invoke's DataProxy tree into plain dicts and lists, dropping None."""
    if isinstance(value, Mapping) or hasattr(value, "_config"):
        return {key: _plain(value[key]) for key in value if value[key] is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_errors(error: ValidationError, prefix: str = CONFIG_KEY) -> str:
    """Turn pydantic's errors into one line each: key, rejected value, what is accepted."""
    lines = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in (prefix, *item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        kind = item["type"]
        if kind == "missing":
            lines.append(f"{location} is missing; set it in invoke.yaml or the file given with -f")
        elif kind == "extra_forbidden":
            key = str(item["loc"][-1]).lower()
            if key in _SECRET_KEYS:
                lines.append(
                    f"{location} looks like a secret; secrets are read only from the "
                    "environment or a 0600 secrets file, never from configuration"
                )
            else:
                lines.append(f"{location} is not a known setting; check its spelling")
        elif item["loc"] == ():
            lines.append(f"{prefix}: {message}")
        else:
            lines.append(f"{location} = {_describe(item['input'])} {message}")
    return "\n".join(lines)


def parse_settings(raw: Mapping[str, Any] | None) -> Settings:
    """Validate a plain mapping of settings; raise ConfigError with one line per bad value."""
    data = _plain(raw or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_errors(error)) from None


def load_settings(ctx: Any) -> Settings:
    """Read and validate the `deployment` key of an Invoke context's configuration."""
    raw = ctx.config.get(CONFIG_KEY) if hasattr(ctx, "config") else None
    if raw is None:
        raise ConfigError(
            f"no '{CONFIG_KEY}' section in the Invoke configuration; copy "
            "invoke.example.yaml to invoke.yaml and fill it in, or pass -f FILE"
        )
    return parse_settings(raw)
