"""Render the files of a deployment and the cloud-init user data that carries them.

Every value reaches a template through a filter made for the file it lands
in (shell, YAML, JSON, systemd, Caddyfile), so a quote, `$`, backtick, `;` or
newline in a value can neither break the file nor inject into it. Values that
no quoting can make safe for a format raise RenderError instead.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2

from . import __version__, htpasswd, layout
from .config import Settings
from .errors import OpsError
from .secrets import Secret

Mode = Literal["console", "deploy"]
MODES: tuple[Mode, ...] = ("console", "deploy")

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
# Hetzner's API rejects user data larger than this (POST /servers, user_data).
USER_DATA_LIMIT = 32 * 1024
# Packages the bootstrap needs on a fresh Hetzner Debian 12 image.
PACKAGES = ("podman", "ufw", "unattended-upgrades", "curl", "ca-certificates", "python3")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029\ufeff]")


class RenderError(OpsError):
    """A value cannot be written safely into the file format it is meant for."""


@dataclass(frozen=True)
class RenderedFile:
    """One file for a server: where it goes, its content, mode and owner."""

    path: str
    content: str
    mode: int
    owner: str = "root:root"
    secret: bool = False


@dataclass(frozen=True)
class DeploymentSecrets:
    """The secrets a server needs: S3 keys and the registry users' password hashes."""

    access_key_id: Secret
    secret_access_key: Secret
    # {user: bcrypt hash}; hashes are not passwords but are kept off user data
    # in deploy mode all the same, since anyone on the server can read that.
    password_hashes: dict[str, str]


# --- filters: one per target format ---------------------------------------


def _shell(value: Any) -> str:
    text = str(value)
    if "\x00" in text:
        raise RenderError("a value for a shell script contains a NUL byte")
    return shlex.quote(text)


def _yaml_scalar(value: Any) -> str:
    # A JSON string is a valid YAML double-quoted scalar. Characters above
    # U+FFFF stay literal, because PyYAML does not join JSON's surrogate pairs.
    # The characters that YAML 1.1 reads as line breaks or a BOM are escaped by hand.
    text = json.dumps(value, ensure_ascii=False)
    return _CONTROL.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _yaml_block(text: str, indent: int) -> str:
    """Write TEXT as a YAML literal block at INDENT spaces, or quoted when it cannot be one."""
    if _CONTROL.search(text) or "\r" in text:
        return _yaml_scalar(text)
    body = text.rstrip("\n")
    trailing = len(text) - len(body)
    if trailing == 0:
        chomping = "-"
    elif trailing == 1:
        chomping = ""
    else:
        chomping = "+"
    lines = body.split("\n")
    # A first line that starts with a space needs an explicit indentation indicator.
    indicator = "2" if lines and lines[0].startswith(" ") else ""
    # The indicator counts from the parent mapping, which sits at INDENT - 2.
    pad = " " * indent
    rendered = "\n".join(pad + line if line else "" for line in lines)
    extra = "\n" * (trailing - 1) if trailing > 1 else ""
    return f"|{indicator}{chomping}\n{rendered}{extra}"


def _systemd(value: Any) -> str:
    """Escape a value for a unit file: `%` starts a specifier; white space and quotes split words."""
    text = str(value)
    if _CONTROL.search(text) or re.search(r"[\s\"'\\$;`]", text):
        raise RenderError(
            f"{text!r} cannot be written into a systemd unit; it contains white space, a quote or a control character"
        )
    return text.replace("%", "%%")


def _caddy(value: Any) -> str:
    """Write a Caddyfile token: bare when plain, else double-quoted with escapes."""
    text = str(value)
    if _CONTROL.search(text) or "\n" in text or "{" in text or "}" in text:
        raise RenderError(
            f"{text!r} cannot be written into a Caddyfile; braces and line breaks are not allowed"
        )
    if re.fullmatch(r"[A-Za-z0-9._@+-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _environment_value(value: Any) -> str:
    """Check a value for podman's --env-file, which takes each line literally."""
    text = value.reveal() if isinstance(value, Secret) else str(value)
    if not text or _CONTROL.search(text) or re.search(r"[\s]", text):
        raise RenderError(
            "an S3 credential is empty or contains white space or control characters; "
            "copy the key again from the Hetzner Console"
        )
    return text


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - no HTML here; each format has its own filter
    )
    env.filters.update(
        shell=_shell,
        yaml=_yaml_scalar,
        yaml_block=_yaml_block,
        systemd=_systemd,
        caddy=_caddy,
        env_value=_environment_value,
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    return env


_ENV = _environment()


def _render(template: str, **values: Any) -> str:
    return _ENV.get_template(template).render(**values)


# --- individual files ------------------------------------------------------


def access_control(settings: Settings) -> dict[str, Any]:
    """Build zot's accessControl section (zot 2.x form) from the users' roles.

    admin: every action on every repository, and metrics; push: read, create
    and update; read: pull only. Anonymous access is off.
    """
    admins = [user.name for user in settings.users if user.role == "admin"]
    policies = []
    pushers = [user.name for user in settings.users if user.role == "push"]
    readers = [user.name for user in settings.users if user.role == "read"]
    if pushers:
        policies.append({"users": pushers, "actions": ["read", "create", "update"]})
    if readers:
        policies.append({"users": readers, "actions": ["read"]})
    return {
        "metrics": {"users": admins},
        "repositories": {
            "**": {"policies": policies, "defaultPolicy": [], "anonymousPolicy": []},
        },
        "adminPolicy": {"users": admins, "actions": ["read", "create", "update", "delete"]},
    }


def render_caddyfile(settings: Settings) -> str:
    return _render(
        "Caddyfile.j2",
        domain=settings.domain,
        acme_email=settings.acme_email,
        acme_staging=settings.acme_staging,
        tls=settings.tls,
        access_log=layout.CADDY_ACCESS_LOG,
        zot_address=layout.ZOT_ADDRESS,
        zot_port=layout.ZOT_PORT,
    )


def render_zot_config(settings: Settings) -> str:
    text = _render(
        "zot-config.json.j2",
        zot_data_dir=layout.ZOT_DATA_DIR,
        storage=settings.storage,
        zot_address=layout.ZOT_ADDRESS,
        zot_port=layout.ZOT_PORT,
        external_url=settings.registry_url,
        htpasswd_path=layout.ZOT_HTPASSWD,
        access_control=access_control(settings),
        log_level=settings.zot.log_level,
        zot_log=layout.ZOT_LOG,
        zot_audit_log=layout.ZOT_AUDIT_LOG,
        metrics=settings.zot.metrics,
        ui=settings.zot.ui,
    )
    # Parse once so that a template mistake fails here, not on the server.
    json.loads(text)
    return text


def render_zot_unit(settings: Settings) -> str:
    return _render(
        "zot.service.j2",
        credentials_path=layout.ZOT_CREDENTIALS,
        htpasswd_path=layout.ZOT_HTPASSWD,
        container=layout.ZOT_CONTAINER,
        autoupdate_label=layout.AUTOUPDATE_LABEL,
        config_dir=layout.ZOT_CONFIG_DIR,
        config_path=layout.ZOT_CONFIG,
        zot_log_dir=layout.ZOT_LOG_DIR,
        zot_data_dir=layout.ZOT_DATA_DIR,
        image=settings.zot.image,
    )


def render_caddy_unit() -> str:
    return _render(
        "caddy.service.j2",
        caddy_user=layout.CADDY_USER,
        caddy_binary=layout.CADDY_BINARY,
        caddyfile=layout.CADDYFILE,
        caddy_home=layout.CADDY_HOME,
        caddy_log_dir=layout.CADDY_LOG_DIR,
    )


def render_credentials(secrets: DeploymentSecrets) -> str:
    return _render(
        "credentials.env.j2",
        access_key_id=_environment_value(secrets.access_key_id),
        secret_access_key=_environment_value(secrets.secret_access_key),
    )


def render_htpasswd(secrets: DeploymentSecrets) -> str:
    return htpasswd.format_entries(secrets.password_hashes)


def render_bootstrap(settings: Settings, caddy_version: str) -> str:
    return _render(
        "bootstrap.sh.j2",
        caddy_version=caddy_version,
        caddy_download_base=settings.caddy.download_base,
        caddy_binary=layout.CADDY_BINARY,
        caddy_user=layout.CADDY_USER,
        caddy_home=layout.CADDY_HOME,
        caddy_log_dir=layout.CADDY_LOG_DIR,
        caddyfile=layout.CADDYFILE,
        domain=settings.domain,
        tls=settings.tls,
        ssh_port=settings.ssh.port,
        done_marker=layout.BOOTSTRAP_DONE_MARKER,
        zot_log_dir=layout.ZOT_LOG_DIR,
        zot_data_dir=layout.ZOT_DATA_DIR,
        state_dir=layout.TOOLKIT_STATE_DIR,
        backup_dir=layout.BACKUP_DIR,
        audit_log_dir=str(Path(layout.AUDIT_LOG).parent),
        allowed_cidrs=settings.ssh.allowed_cidrs,
        autoupdate_timer=layout.AUTOUPDATE_TIMER,
        credentials_path=layout.ZOT_CREDENTIALS,
        htpasswd_path=layout.ZOT_HTPASSWD,
    )


def deployment_info(settings: Settings, caddy_version: str) -> str:
    """Describe what was deployed, without secrets, for diagnostics and upgrades."""
    info = {
        "name": settings.name,
        "domain": settings.domain,
        "zot_image": settings.zot.image,
        "caddy_version": caddy_version,
        "toolkit_version": __version__,
    }
    return json.dumps(info, indent=2) + "\n"


def render_files(
    settings: Settings,
    secrets: DeploymentSecrets | None,
    mode: Mode,
    caddy_version: str,
) -> dict[str, RenderedFile]:
    """Render every file a server needs, keyed by its path on the server.

    In deploy mode the secret files (S3 credentials, htpasswd) are rendered
    only when SECRETS is given, because they travel over SSH, not in user data.
    """
    if mode not in MODES:
        raise RenderError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if caddy_version == "latest":
        raise RenderError("resolve the Caddy version before rendering (ops.caddy.resolve_version)")
    files = [
        RenderedFile(layout.CADDYFILE, render_caddyfile(settings), 0o644),
        RenderedFile(layout.CADDY_UNIT_PATH, render_caddy_unit(), 0o644),
        RenderedFile(layout.ZOT_CONFIG, render_zot_config(settings), 0o600),
        RenderedFile(layout.ZOT_UNIT_PATH, render_zot_unit(settings), 0o644),
        RenderedFile(layout.BOOTSTRAP_SCRIPT, render_bootstrap(settings, caddy_version), 0o700),
        RenderedFile(layout.DEPLOYMENT_INFO, deployment_info(settings, caddy_version), 0o644),
        RenderedFile(
            layout.SSHD_DROPIN, _render("sshd.conf.j2", ssh_port=settings.ssh.port), 0o644
        ),
    ]
    if settings.bootstrap.unattended_upgrades:
        files.append(
            RenderedFile(layout.UNATTENDED_UPGRADES_DROPIN, _render("auto-upgrades.conf.j2"), 0o644)
        )
    if settings.zot.insecure_registries:
        files.append(
            RenderedFile(
                layout.CONTAINERS_REGISTRIES_DROPIN,
                _render("registries.conf.j2", insecure_registries=settings.zot.insecure_registries),
                0o644,
            )
        )
    if secrets is not None:
        files.append(
            RenderedFile(layout.ZOT_CREDENTIALS, render_credentials(secrets), 0o600, secret=True)
        )
        files.append(
            RenderedFile(layout.ZOT_HTPASSWD, render_htpasswd(secrets), 0o600, secret=True)
        )
    elif mode == "console":
        raise RenderError("console mode embeds the secrets; none were given")
    return {file.path: file for file in files}


def render_user_data(
    settings: Settings,
    secrets: DeploymentSecrets | None,
    mode: Mode,
    caddy_version: str,
) -> str:
    """Render the cloud-init user data for a new server.

    Console mode embeds the secret files; deploy mode leaves them out. The
    result is checked against Hetzner's 32 KiB user data limit.
    """
    files = render_files(settings, secrets if mode == "console" else None, mode, caddy_version)
    public_key = settings.ssh.public_key.read_text().strip()
    text = _render(
        "cloud-init.yaml.j2",
        toolkit_version=__version__,
        mode=mode,
        name=settings.name,
        domain=settings.domain,
        ssh_public_key=public_key,
        apt_proxy=settings.bootstrap.apt_proxy,
        packages=PACKAGES,
        files=sorted(files.values(), key=lambda file: file.path),
        bootstrap_script=layout.BOOTSTRAP_SCRIPT,
    )
    size = len(text.encode("utf-8"))
    if size > USER_DATA_LIMIT:
        raise RenderError(
            f"the user data is {size} bytes; Hetzner accepts at most {USER_DATA_LIMIT}. "
            "Use deploy mode, which leaves the secret files out"
        )
    return text
