#!/usr/bin/env bash
# Install the Debian 12 packages that the sandbox hosts and the integration
# tests need on this machine. Idempotent: when every package is installed
# already it changes nothing and runs no `apt-get update`. Needs root.
set -euo pipefail

packages=(
	# Sandbox hosts: systemd-nspawn, the golden tree, forwarders, namespaces.
	systemd-container debootstrap debian-archive-keyring socat iproute2 util-linux mount
	openssh-client
	# Stand-ins that run on this machine's loopback: the image registry (zot's
	# API), images built with buildah and copied with skopeo, Caddy's binary
	# for the release stand-in, and the tools inside the zot stand-in image.
	podman skopeo buildah caddy docker-registry busybox-static jq
	# cloud-init on this machine validates rendered user data (cloud-init schema);
	# shellcheck lints the rendered bootstrap script.
	cloud-init shellcheck
	# scripts/test.sh creates the project's virtual environment.
	python3-venv
)

if [ "$(id -u)" -ne 0 ]; then
	echo "install-host-packages.sh: run as root (apt-get install)" >&2
	exit 1
fi

missing=()
for package in "${packages[@]}"; do
	status=$(dpkg-query -W -f '${Status}' "$package" 2>/dev/null || true)
	if [ "$status" != "install ok installed" ]; then
		missing+=("$package")
	fi
done
if [ "${#missing[@]}" -eq 0 ]; then
	exit 0
fi

echo "install-host-packages.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# caddy and docker-registry ship services that listen on :80 and :5000 of
# every interface. policy-rc.d (exit 101: action forbidden) keeps the
# maintainer scripts from starting them; the harness runs its own copies on
# loopback. An existing policy-rc.d is left as it is.
policy=/usr/sbin/policy-rc.d
added_policy=no
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
	added_policy=yes
fi
cleanup() {
	if [ "$added_policy" = yes ]; then
		rm -f "$policy"
	fi
}
trap cleanup EXIT

apt-get update -qq
apt-get install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null

# Where systemd manages this machine, keep those services from starting at boot too.
if [ -d /run/systemd/system ]; then
	for unit in caddy.service docker-registry.service; do
		systemctl disable --now "$unit" >/dev/null 2>&1 || true
	done
fi
