#!/usr/bin/env bash
# `make run`: the schema migrated and the plans seeded, then the app on http://127.0.0.1:5000 with the embedded
# defaults. Without STRIPE_SECRET_KEY, the bundled Stripe emulator runs beside it on :12111 (state in
# instance/stripe_emulator.json); the app's webhook endpoint is registered in it as an operator registers it in
# Stripe, its signing secret kept as the development STRIPE_WEBHOOK_SECRET (scripts/dev_webhook_endpoint.py), so
# the emulator's events arrive signed as Stripe's do.
set -euo pipefail
cd "$(dirname "$0")/.."

# Another `make run` (another checkout) on these ports: starting beside it would register this app's webhook
# endpoint in the other's emulator, replacing its endpoint and secret, so that its deliveries failed their signature.
port_in_use() {
  .venv/bin/python -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: a closed port in TIME_WAIT is free
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)' "$1"
}
ports="5000"
[ -z "${STRIPE_SECRET_KEY:-}" ] && ports="$ports 12111"
for port in $ports; do
  if port_in_use "$port"; then
    echo "Port $port is in use (another \`make run\`?): stop it first; nothing was started." >&2
    exit 1
  fi
done

# The schema and the plans, once the ports are known to be free (a refused start changes nothing).
.venv/bin/flask db upgrade
.venv/bin/flask seed-plans

if [ -z "${STRIPE_SECRET_KEY:-}" ]; then
  .venv/bin/python -m stripe_emulator --host 127.0.0.1 --port 12111 --state instance/stripe_emulator.json --quiet &
  emulator=$!
  trap 'kill $emulator 2>/dev/null || true' EXIT INT TERM
  for _ in $(seq 50); do
    .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:12111/_emulator/health')" \
      2>/dev/null && break
    sleep 0.2
  done
  .venv/bin/python scripts/dev_webhook_endpoint.py
  echo "Stripe emulator: http://127.0.0.1:12111 (test cards: 4242 4242 4242 4242 pays, 4000 0000 0000 0002 is declined)"
fi
if [ -n "${TASK_QUEUE_URL:-}" ]; then
  # The task queue's processes beside the app (without TASK_QUEUE_URL, mail goes out after each response).
  .venv/bin/flask queue worker &
  worker=$!
  .venv/bin/flask queue cron &
  cron=$!
  trap 'kill ${emulator:-} $worker $cron 2>/dev/null || true' EXIT INT TERM
  echo "Task queue: a worker and the scheduler on $TASK_QUEUE_URL"
fi
echo "App: http://127.0.0.1:5000"
# `flask run`'s server, which also closes a response when the browser resets the connection once it has it: without
# a task queue, mail goes out when the response is closed (app/devserver.py).
.venv/bin/python -m app.devserver --host 127.0.0.1 --port 5000
