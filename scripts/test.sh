#!/usr/bin/env bash
# `make test`: system packages if missing, throw-away PostgreSQL and Redis on loopback, the whole suite, cleanup.
# Exits non-zero when any test fails.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/install-system-deps.sh || exit 1

dir=$(mktemp -d /tmp/ssb-test.XXXXXX)
chmod 755 "$dir"
alone_pid=
cleanup() {
  [ -n "$alone_pid" ] && kill "$alone_pid" 2>/dev/null
  scripts/test-services.sh stop "$dir/services"
  scripts/test-services.sh stop "$dir/services-alone"
  rm -rf "$dir"
}
trap cleanup EXIT

exports=$(scripts/test-services.sh start "$dir/services") || { echo "could not start PostgreSQL/Redis" >&2; exit 1; }
eval "$exports"

if [ "$#" -gt 0 ]; then
  .venv/bin/python -m pytest "$@"
  exit $?
fi
# The whole suite: two processes (pytest-xdist; each has its own database and Redis db), and beside them a third that
# runs the tests that stop PostgreSQL or Redis under the app (`stops_services`) on a PostgreSQL and a Redis of its own,
# so that no other test sees its servers vanish. The parallel run writes down the files holding those tests once it
# has collected them (tests/conftest.py): the third process then starts and collects those files only. Files are
# handed out whole, in the order of tests/conftest.py (LONGEST_FIRST first), not reordered by their number of tests.
workers=${TEST_WORKERS:-2}
stops_services="$dir/stops_services_files"
(
  while [ ! -e "$stops_services" ] && [ ! -e "$dir/parallel_done" ]; do sleep 0.5; done
  if [ -e "$stops_services" ] && [ ! -s "$stops_services" ]; then exit 0; fi  # no test stops a service
  unset TEST_PG_PORT TEST_REDIS_PORT  # the ports of the parallel run's servers: new ones for these
  own=$(scripts/test-services.sh start "$dir/services-alone") || { echo "could not start PostgreSQL/Redis" >&2; exit 1; }
  eval "$own"
  files=()
  [ -e "$stops_services" ] && mapfile -t files <"$stops_services"  # without the list: the whole suite collected
  exec .venv/bin/python -m pytest -m stops_services "${files[@]}"
) >"$dir/alone.log" 2>&1 &
alone_pid=$!
STOPS_SERVICES_FILES="$stops_services" .venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder \
  -m "not stops_services" --durations=15
parallel=$?
touch "$dir/parallel_done"
[ "$parallel" -eq 2 ] && kill "$alone_pid" 2>/dev/null  # interrupted (^C reaches the run in the foreground only)
wait "$alone_pid"
alone=$?
alone_pid=
echo "--- the tests that stop PostgreSQL or Redis (beside the others, on servers of their own):"
cat "$dir/alone.log"
[ "$parallel" -eq 0 ] && [ "$alone" -eq 0 ]
