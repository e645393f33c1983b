# Two commands for a fresh machine: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)
# Debian packages the tests drive: Chromium (docs page in a real browser), docker-compose
# (validates docker-compose.yml; no Docker engine is needed for that), wrk (the benchmark's load),
# kubectl (renders deploy/kubernetes; Debian's kubernetes-client when the machine has none).
SYSTEM_DEPS := /usr/bin/chromium /usr/bin/docker-compose /usr/bin/wrk /usr/bin/kubectl
APT := $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq

.PHONY: install serve test lint openapi bench clean system-deps

CLIENT := client/pyproject.toml $(wildcard client/jacobian_client/*)

$(STAMP): pyproject.toml $(CLIENT)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# The Python client, installed as its users install it (not editable): the tests use that copy.
	$(PY) -m pip install -q ./client
	rm -rf client/build
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

serve: $(STAMP)
	$(PY) -m app

lint: $(STAMP)
	$(PY) -m ruff check app tests bench client
	$(PY) -m ruff format --check app tests bench client
	$(PY) -m mypy app
	$(PY) -m mypy --strict client/jacobian_client

# One package per missing binary: a kubectl already on the machine is not replaced.
/usr/bin/chromium:
	$(APT) chromium
/usr/bin/docker-compose:
	$(APT) docker-compose
/usr/bin/wrk:
	$(APT) wrk
/usr/bin/kubectl:
	$(APT) kubernetes-client

system-deps: $(SYSTEM_DEPS)

test: lint system-deps
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Not part of `make test` (timings are noisy); its code is linted and smoke-tested there.
bench: $(STAMP) system-deps
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m bench.run

openapi: $(STAMP)
	$(PY) -m app.openapi > openapi/openapi.json
