# The two commands of the README: `make run` and `make test`.
VENV   := .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

.PHONY: run test test-fast lint install system-deps bench clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

## make run: the app at http://127.0.0.1:5000 with the embedded defaults (SQLite, in-process cache, Stripe emulator);
## `make run APP_PORT=5050 EMULATOR_PORT=12112` moves the app and the emulator (every URL built on them follows).
APP_PORT      ?= 5000
EMULATOR_PORT ?= 12111
run: install
	APP_PORT=$(APP_PORT) EMULATOR_PORT=$(EMULATOR_PORT) scripts/run-dev.sh

## make test: installs what is missing, lints, starts throw-away PostgreSQL and Redis, runs the whole suite.
## mypy (a minute of CPU without its cache, as on a fresh clone) runs beside the tests at a low priority, on the
## CPU they leave idle while they wait on subprocesses, servers and the browser; its verdict counts all the same.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@typed=$$(mktemp); nice -n 10 $(BIN)/mypy >"$$typed" 2>&1 & mypy=$$!; \
	scripts/test.sh $(PYTEST_ARGS); tests=$$?; \
	wait $$mypy; mypy_status=$$?; echo "mypy:"; cat "$$typed"; rm -f "$$typed"; \
	[ $$tests -eq 0 ] && [ $$mypy_status -eq 0 ]

## make test-fast: the table tests of the pure rules (no PostgreSQL, Redis, emulator or browser), in seconds
test-fast: install
	$(BIN)/python -m pytest tests/unit -q

## make lint: ruff (lint and format check) and mypy, as `make test` runs them
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## make bench: installs wrk when missing, then every benchmark of BENCHMARKS.md against its baseline (not part of `make test`)
bench: install
	scripts/install-bench-deps.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
