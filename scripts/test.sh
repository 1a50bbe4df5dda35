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
# The parallel run writes down the files that hold the `stops_services` tests (tests/conftest.py), so that the run
# alone collects those files only, not the whole suite again; without that list (the parallel run stopped before its
# collection) it collects everything, as before.
workers=${TEST_WORKERS:-2}
stops_services="$dir/stops_services_files"
STOPS_SERVICES_FILES="$stops_services" .venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder \
  -m "not stops_services" --durations=15
parallel=$?
if [ ! -e "$stops_services" ]; then
  .venv/bin/python -m pytest -m stops_services
  alone=$?
elif [ -s "$stops_services" ]; then
  mapfile -t files <"$stops_services"
  .venv/bin/python -m pytest -m stops_services "${files[@]}"
  alone=$?
else
  alone=0  # no test stops a service
fi
[ "$parallel" -eq 0 ] && [ "$alone" -eq 0 ]
