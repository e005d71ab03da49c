#!/usr/bin/env bash
# Install what the tests need on a fresh Debian 12 machine, then run them all.
# As root this includes the host packages for the local Debian 12 test hosts
# (systemd-nspawn); without root the integration tests are skipped.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not integration"`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
	bash scripts/install-host-packages.sh
else
	echo "test.sh: not root, so host packages are not installed and integration tests will skip" >&2
fi

if [ ! -x .venv/bin/python ]; then
	python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
