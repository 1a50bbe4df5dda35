#!/usr/bin/env bash
# Installs, from Debian's packages, what `make bench` needs beyond the test suite's servers: the load generator wrk.
set -euo pipefail

scripts/install-system-deps.sh  # PostgreSQL and Redis (and the test suite's other packages) when absent

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" != "0" ]; then
    echo "Missing system package: wrk (run as root, or install it: apt-get install wrk)" >&2
    exit 1
  fi
  echo "Installing system package: wrk"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
