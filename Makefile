# Two commands for a fresh machine: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)
# Debian packages the tests drive: Chromium (docs page in a real browser), docker-compose
# (validates docker-compose.yml; no Docker engine is needed for that), wrk (the benchmark's load).
SYSTEM_DEPS := /usr/bin/chromium /usr/bin/docker-compose /usr/bin/wrk

.PHONY: install serve test lint openapi bench clean system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

serve: $(STAMP)
	$(PY) -m app

lint: $(STAMP)
	$(PY) -m ruff check app tests bench
	$(PY) -m ruff format --check app tests bench
	$(PY) -m mypy app

$(SYSTEM_DEPS):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium docker-compose wrk

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
