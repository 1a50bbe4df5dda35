#!/usr/bin/env bash
# `make run`: the schema migrated and the plans seeded, then the app on http://127.0.0.1:5000 with the embedded
# defaults. Without STRIPE_SECRET_KEY, the bundled Stripe emulator runs beside it on :12111 (state in
# instance/stripe_emulator.json); the app's webhook endpoint is registered in it as an operator registers it in
# Stripe, its signing secret kept as the development STRIPE_WEBHOOK_SECRET (scripts/dev_webhook_endpoint.py), so
# the emulator's events arrive signed as Stripe's do.
#
# APP_PORT and EMULATOR_PORT change the two ports (`make run APP_PORT=5050`: macOS's AirPlay receiver holds 5000);
# every address built on them follows: APP_BASE_URL (mails' links, Checkout's and the Portal's return URLs, the
# webhook endpoint registered in the emulator) and STRIPE_API_BASE (the emulator the app talks to, whose hosted pages
# are served on the address the app reached it by). An APP_BASE_URL already in the environment is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

APP_PORT=${APP_PORT:-5000}
EMULATOR_PORT=${EMULATOR_PORT:-12111}
# The Stripe key the app will read: the environment's, else the one in .env (the `flask` command and the server load
# it; this shell does not). With one, the app talks to Stripe: no emulator, and STRIPE_API_BASE is left alone.
stripe_key=${STRIPE_SECRET_KEY:-$(.venv/bin/python -c 'import dotenv, sys
sys.stdout.write(dotenv.dotenv_values(".env").get("STRIPE_SECRET_KEY") or "")' 2>/dev/null || true)}
for setting in "APP_PORT=$APP_PORT" "EMULATOR_PORT=$EMULATOR_PORT"; do
  if ! [[ ${setting#*=} =~ ^[0-9]+$ ]] || [ "${setting#*=}" -lt 1 ] || [ "${setting#*=}" -gt 65535 ]; then
    echo "${setting%%=*} must be a port number from 1 to 65535, not '${setting#*=}'; nothing was started." >&2
    exit 1
  fi
done
if [ "$APP_PORT" = "$EMULATOR_PORT" ] && [ -z "$stripe_key" ]; then
  echo "APP_PORT and EMULATOR_PORT are both $APP_PORT: give them two ports; nothing was started." >&2
  exit 1
fi
export APP_BASE_URL="${APP_BASE_URL:-http://127.0.0.1:$APP_PORT}"

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
settings="APP_PORT=$APP_PORT"
[ -z "$stripe_key" ] && settings="$settings EMULATOR_PORT=$EMULATOR_PORT"
for setting in $settings; do
  if port_in_use "${setting#*=}"; then
    echo "Port ${setting#*=} is in use (another \`make run\`?): stop it, or give ${setting%%=*} a free port" \
      "(\`make run ${setting%%=*}=<port>\`); nothing was started." >&2
    exit 1
  fi
done

# The emulator the app talks to (its gateway's emulator key): set before `flask` reads the configuration.
[ -z "$stripe_key" ] && export STRIPE_API_BASE="http://127.0.0.1:$EMULATOR_PORT"

# The schema and the plans, once the ports are known to be free (a refused start changes nothing).
.venv/bin/flask db upgrade
.venv/bin/flask seed-plans

if [ -z "$stripe_key" ]; then
  .venv/bin/python -m stripe_emulator --host 127.0.0.1 --port "$EMULATOR_PORT" --api-key sk_test_emulator \
    --state instance/stripe_emulator.json --quiet &
  emulator=$!
  trap 'kill $emulator 2>/dev/null || true' EXIT INT TERM
  for _ in $(seq 50); do
    .venv/bin/python -c "import urllib.request; urllib.request.urlopen('$STRIPE_API_BASE/_emulator/health')" \
      2>/dev/null && break
    sleep 0.2
  done
  .venv/bin/python scripts/dev_webhook_endpoint.py
  echo "Stripe emulator: $STRIPE_API_BASE (test cards: 4242 4242 4242 4242 pays, 4000 0000 0000 0002 is declined)"
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
echo "App: http://127.0.0.1:$APP_PORT"
# `flask run`'s server, which also closes a response when the browser resets the connection once it has it: without
# a task queue, mail goes out when the response is closed (app/devserver.py).
.venv/bin/python -m app.devserver --host 127.0.0.1 --port "$APP_PORT"
