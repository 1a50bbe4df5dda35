#!/usr/bin/env bash
# `make test`: system packages if missing, throw-away PostgreSQL and Redis on loopback, the whole suite, cleanup.
# Exits with pytest's status.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/install-system-deps.sh || exit 1

dir=$(mktemp -d /tmp/ssb-test.XXXXXX)
chmod 755 "$dir"
cleanup() { scripts/test-services.sh stop "$dir/services"; rm -rf "$dir"; }
trap cleanup EXIT

exports=$(scripts/test-services.sh start "$dir/services") || { echo "could not start PostgreSQL/Redis" >&2; exit 1; }
eval "$exports"

.venv/bin/python -m pytest "$@"
