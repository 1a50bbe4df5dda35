#!/usr/bin/env bash
# `make run`: the app on http://127.0.0.1:5000 with the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/flask run --host 127.0.0.1 --port 5000
