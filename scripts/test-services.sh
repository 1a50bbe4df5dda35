#!/usr/bin/env bash
# Throw-away PostgreSQL and Redis on loopback for the test suite.
#   scripts/test-services.sh start DIR   -> starts both under DIR, prints `export …` lines for the tests
#   scripts/test-services.sh stop DIR    -> stops both
# PostgreSQL refuses to run as root, so initdb/pg_ctl run as the `postgres` user with data and socket under DIR.
set -euo pipefail

cmd=${1:?start|stop}
dir=${2:?directory}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] || { echo "PostgreSQL server binaries not found under /usr/lib/postgresql" >&2; exit 1; }
  echo "$d"
}

as_postgres() {
  if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    PG_PORT=${TEST_PG_PORT:-$(free_port)}
    REDIS_PORT=${TEST_REDIS_PORT:-$(free_port)}
    mkdir -p "$dir"
    echo "$PG_PORT $REDIS_PORT" > "$dir/ports"
    bin=$(pg_bin)
    if [ "$(id -u)" = "0" ]; then chown postgres "$dir"; chmod 700 "$dir"; fi
    if [ ! -f "$dir/pgdata/PG_VERSION" ]; then
      as_postgres "$bin/initdb" -D "$dir/pgdata" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_postgres "$bin/pg_ctl" -D "$dir/pgdata" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >/dev/null
    "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "CREATE DATABASE ssb_test" >/dev/null 2>&1 || true
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
    for _ in $(seq 1 50); do
      redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    echo "export TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:$PG_PORT/ssb_test"
    echo "export TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
    echo "export TEST_PG_BIN=$bin"
    echo "export TEST_PG_DATA=$dir/pgdata"
    echo "export TEST_SERVICES_DIR=$dir"
    echo "export TEST_REDIS_PORT=$REDIS_PORT"
    ;;
  stop)
    [ -f "$dir/ports" ] || exit 0
    read -r PG_PORT REDIS_PORT < "$dir/ports"
    bin=$(pg_bin)
    if [ -f "$dir/pgdata/postmaster.pid" ]; then as_postgres "$bin/pg_ctl" -D "$dir/pgdata" -m fast stop >/dev/null 2>&1 || true; fi
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
