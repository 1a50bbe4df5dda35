#!/usr/bin/env bash
# Installs, from Debian's packages, what `make bench` needs beyond the test suite's servers: the load generator wrk
# (and valgrind, for bench/instructions.py).
set -euo pipefail

scripts/install-system-deps.sh  # PostgreSQL and Redis (and the test suite's other packages) when absent

# valgrind: bench/instructions.py counts a request's instructions under its callgrind tool.
for tool in wrk valgrind; do
  if command -v "$tool" >/dev/null 2>&1; then
    continue
  fi
  if [ "$(id -u)" != "0" ]; then
    echo "Missing system package: $tool (run as root, or install it: apt-get install $tool)" >&2
    exit 1
  fi
  echo "Installing system package: $tool"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$tool" >/dev/null
done

