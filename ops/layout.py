"""Paths, unit names and ports on a deployed server.

Every module that renders, changes or inspects a server takes these names
from here, so the bootstrap, the day-two tasks and the diagnostics agree.
"""

# zot runs in a podman container managed by a systemd unit.
ZOT_UNIT = "zot.service"
ZOT_CONTAINER = "zot"
ZOT_CONFIG_DIR = "/etc/zot"
ZOT_CONFIG = "/etc/zot/config.json"
ZOT_HTPASSWD = "/etc/zot/htpasswd"
ZOT_CREDENTIALS = "/etc/zot/credentials.env"
ZOT_LOG_DIR = "/var/log/zot"
ZOT_LOG = "/var/log/zot/zot.log"
ZOT_AUDIT_LOG = "/var/log/zot/audit.log"
# zot's local state: the BoltDB cache and the storage root it keeps beside S3.
ZOT_DATA_DIR = "/var/lib/zot"
# zot listens on this loopback port only; Caddy is the sole public entry.
ZOT_ADDRESS = "127.0.0.1"
ZOT_PORT = 5000
ZOT_UNIT_PATH = "/etc/systemd/system/zot.service"
AUTOUPDATE_LABEL = "io.containers.autoupdate"
AUTOUPDATE_TIMER = "podman-auto-update.timer"
AUTOUPDATE_SERVICE = "podman-auto-update.service"

# Caddy is installed from the upstream release tarball, not from Debian.
CADDY_UNIT = "caddy.service"
CADDY_UNIT_PATH = "/etc/systemd/system/caddy.service"
CADDY_BINARY = "/usr/local/bin/caddy"
CADDY_PREVIOUS_BINARY = "/usr/local/bin/caddy.previous"
CADDY_CONFIG_DIR = "/etc/caddy"
CADDYFILE = "/etc/caddy/Caddyfile"
CADDY_USER = "caddy"
CADDY_HOME = "/var/lib/caddy"
CADDY_LOG_DIR = "/var/log/caddy"
CADDY_ACCESS_LOG = "/var/log/caddy/access.log"

# The toolkit's own files on the server.
TOOLKIT_LIB_DIR = "/usr/local/lib/zot-hetzner"
BOOTSTRAP_SCRIPT = "/usr/local/lib/zot-hetzner/bootstrap.sh"
TOOLKIT_STATE_DIR = "/var/lib/zot-hetzner"
BOOTSTRAP_DONE_MARKER = "/var/lib/zot-hetzner/bootstrap.done"
# Created with an atomic mkdir; contains an "owner" file naming who holds it.
LOCK_DIR = "/var/lib/zot-hetzner/lock"
BACKUP_DIR = "/var/lib/zot-hetzner/backups"
# One line per change made by the toolkit (JSON lines).
AUDIT_LOG = "/var/log/zot-hetzner/audit.log"
# Non-secret description of what was deployed: name, versions, rendered-at.
DEPLOYMENT_INFO = "/etc/zot-hetzner/deployment.json"

SSHD_DROPIN = "/etc/ssh/sshd_config.d/50-zot-hetzner.conf"
UNATTENDED_UPGRADES_DROPIN = "/etc/apt/apt.conf.d/52zot-hetzner-unattended-upgrades"
CONTAINERS_REGISTRIES_DROPIN = "/etc/containers/registries.conf.d/50-zot-hetzner.conf"
