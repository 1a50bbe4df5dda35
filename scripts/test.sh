#!/usr/bin/env bash
# `make test`: system packages if missing, throw-away PostgreSQL and Redis on loopback, the whole suite, cleanup.
# Exits non-zero when any test fails.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/install-system-deps.sh || exit 1

dir=$(mktemp -d /tmp/ssb-test.XXXXXX)
chmod 755 "$dir"
cleanup() { scripts/test-services.sh stop "$dir/services"; rm -rf "$dir"; }
trap cleanup EXIT

exports=$(scripts/test-services.sh start "$dir/services") || { echo "could not start PostgreSQL/Redis" >&2; exit 1; }
eval "$exports"

if [ "$#" -gt 0 ]; then
  .venv/bin/python -m pytest "$@"
  exit $?
fi
# The whole suite: two processes (pytest-xdist; each has its own database and Redis db), then, alone, the tests that
# stop PostgreSQL or Redis under the app. Files are handed out whole, in the order of tests/conftest.py
# (LONGEST_FIRST first), not reordered by their number of tests.
workers=${TEST_WORKERS:-2}
.venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder -m "not stops_services" --durations=15
parallel=$?
.venv/bin/python -m pytest -m stops_services
alone=$?
[ "$parallel" -eq 0 ] && [ "$alone" -eq 0 ]
