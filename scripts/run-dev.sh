#!/usr/bin/env bash
# `make run`: the app on http://127.0.0.1:5000 with the embedded defaults. Without STRIPE_SECRET_KEY, the bundled
# Stripe emulator runs beside it on :12111 (state in instance/stripe_emulator.json) and delivers its signed
# webhooks to the app's endpoint with the development webhook secret.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${STRIPE_SECRET_KEY:-}" ]; then
  secret=$(.venv/bin/python -c "import json; print(json.load(open('instance/dev-secrets.json'))['STRIPE_WEBHOOK_SECRET'])")
  .venv/bin/python -m stripe_emulator --host 127.0.0.1 --port 12111 --state instance/stripe_emulator.json \
    --webhook http://127.0.0.1:5000/api/v1/billing/webhooks/stripe --webhook-secret "$secret" --quiet &
  emulator=$!
  trap 'kill $emulator 2>/dev/null || true' EXIT INT TERM
  echo "Stripe emulator: http://127.0.0.1:12111 (test cards: 4242 4242 4242 4242 pays, 4000 0000 0000 0002 is declined)"
fi
echo "App: http://127.0.0.1:5000"
.venv/bin/flask run --host 127.0.0.1 --port 5000
