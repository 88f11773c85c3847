# wa-blocklist-proxy: every target creates or refreshes the local virtualenv (.venv) first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.yaml

# Development defaults so `make run` works on a fresh machine; set real values in the environment in production.
export ADMIN_TOKEN       ?= dev-admin-token-change-me
export VIEWER_TOKEN      ?= dev-viewer-token-change-me
export META_APP_SECRET   ?= dev-app-secret
export META_VERIFY_TOKEN ?= dev-verify-token

.PHONY: run test bench check-config lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[speed]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,dev,speed]'
	touch $@

# Real JavaScript clients (whatsapp-api-js) that the tests run against the proxy; Node and npm are on the machine.
tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund --silent
	touch $@

# HOST and PORT override server.host / server.port (config.yaml reads them): make run PORT=8081
run: $(VENV)/.run-installed
	$(BIN)/wa-blocklist serve --config $(CONFIG)

check-config: $(VENV)/.run-installed
	$(BIN)/wa-blocklist check-config --config $(CONFIG)

test: $(VENV)/.test-installed tests/js/node_modules/.installed
	$(BIN)/ruff check wa_blocklist proxy plugins tests bench tools
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test-installed
	@command -v nginx >/dev/null && command -v wrk >/dev/null && command -v valgrind >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk valgrind)
	$(BIN)/python -m bench $(BENCH_ARGS)
	PY=$(BIN)/python bash bench/instructions.sh

lint: $(VENV)/.test-installed
	$(BIN)/ruff check wa_blocklist proxy plugins tests bench tools
	$(BIN)/ruff format --check wa_blocklist proxy plugins tests bench tools
	$(BIN)/mypy

clean:
	rm -rf $(VENV) data .pytest_cache
