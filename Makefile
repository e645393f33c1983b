# Two commands for a fresh machine: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# TensorFlow's CPU build unless the machine has an NVIDIA GPU: the CUDA build greets every start
# on a machine without one with "failed call to cuInit". `make TF=cuda ...` or `TF=cpu` to choose.
TF     ?= $(if $(wildcard /proc/driver/nvidia/gpus/*),cuda,cpu)
TF_DIST       := $(if $(filter cuda,$(TF)),tensorflow,tensorflow-cpu)
TF_OTHER_DIST := $(if $(filter cuda,$(TF)),tensorflow-cpu,tensorflow)
STAMP  := $(VENV)/.installed-$(TF)-$(shell cksum pyproject.toml | cut -d' ' -f1)

SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)
# Debian packages the tests drive: Chromium (docs page in a real browser), docker-compose
# (validates docker-compose.yml; no Docker engine is needed for that), wrk (the benchmark's load),
# kubectl (renders deploy/kubernetes; Debian's kubernetes-client when the machine has none),
# podman, buildah and podman-compose (the image built and run for real, no daemon) and mmdebstrap
# (a stand-in base image where the real one cannot be pulled).
SYSTEM_DEPS := /usr/bin/chromium /usr/bin/docker-compose /usr/bin/wrk /usr/bin/kubectl \
	/usr/bin/podman /usr/bin/buildah /usr/bin/podman-compose /usr/bin/mmdebstrap
APT := $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq

.PHONY: install serve check test lint openapi bench clean system-deps image image-gpu models

CLIENT := client/pyproject.toml $(wildcard client/jacobian_client/*)

# uv installs (in parallel: a fresh .venv in half pip's time), from the indexes pip is configured
# with (tools/uv_flags.py), byte-compiled as pip would (a machine may set PYTHONDONTWRITEBYTECODE).
UV := $(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode

$(STAMP): pyproject.toml $(CLIENT) tools/uv_flags.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'uv==0.13.*'
	# Both TensorFlow builds install the same files: switching means removing both first.
	if $(PY) -m pip show -q $(TF_OTHER_DIST) 2>/dev/null; then $(PY) -m pip uninstall -q -y $(TF_OTHER_DIST) $(TF_DIST); fi
	$(UV) $$($(PY) tools/uv_flags.py) -e '.[dev,$(TF)]'
	# TensorFlow Probability imports tf-keras, which requires `tensorflow` by name: tensorflow-cpu
	# (or the CUDA build) provides the same package, so without its dependencies.
	$(UV) $$($(PY) tools/uv_flags.py) --no-deps 'tf-keras==2.21.*'
	# The Python client, installed as its users install it (not editable): the tests use that copy.
	$(UV) $$($(PY) tools/uv_flags.py) ./client
	rm -rf client/build
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# The example repository is served unless JACOBIAN_MODEL_REPOSITORY names another (empty: none).
serve: export JACOBIAN_MODEL_REPOSITORY ?= models
serve: $(STAMP) models/.built
	$(PY) -m app

lint: $(STAMP)
	$(PY) -m ruff check app tests bench client examples tools
	$(PY) -m ruff format --check app tests bench client examples tools
	$(PY) -m mypy app
	$(VENV)/bin/lint-imports
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
/usr/bin/podman:
	$(APT) podman
/usr/bin/buildah:
	$(APT) buildah
/usr/bin/podman-compose:
	$(APT) podman-compose
/usr/bin/mmdebstrap:
	$(APT) mmdebstrap

system-deps: $(SYSTEM_DEPS)

# The example model repository (examples/build_models.py), in TF Serving's layout.
models: models/.built
models/.built: $(STAMP) examples/build_models.py
	rm -rf models
	$(PY) -m examples.build_models models
	touch $@

# Two pytest processes share the tiers' modules (pytest-xdist), each module whole on one of
# them, and the modules of one shared server together (tests/conftest.py: SHARED_SERVERS).
XDIST := -n 2

# `make check`, after every change: lint, the unit tests (alone first: in a process without
# TensorFlow, which their conftest keeps out) and the app with its engine in this process.
check: lint
	$(PY) -m pytest tests/unit -q
	$(PY) -m pytest $(XDIST) tests/app -q

# Everything: lint, the unit tests, then the app, served, canary and artifacts tiers in one run.
test: lint system-deps
	$(PY) -m pytest tests/unit -q
	$(PY) -m pytest $(XDIST) tests/zoo tests/app tests/served tests/canary tests/artifacts

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Not part of `make test` (timings are noisy); its code is linted and smoke-tested there.
# KServe, the latency reference (`bench/kserve_model.py`), pins its own FastAPI, protobuf and grpc:
# a virtualenv of its own.
KSERVE := bench/.kserve/bin/python
$(KSERVE):
	$(PYTHON) -m venv bench/.kserve
	$@ -m pip install -q 'kserve==0.21.*' 'tensorflow-cpu==2.21.0'

bench: $(STAMP) system-deps $(KSERVE)
	$(UV) $$($(PY) tools/uv_flags.py) -e '.[dev,bench,$(TF)]'
	$(PY) -m bench.run
	$(PY) -m bench.models --out bench/models.md
	$(PY) -m bench.zoo --out bench/zoo.md
	$(PY) -m bench.client_wrappers --out bench/client_wrappers.md

# The images, built with podman (tests/support/containers.py; the CPU one is built and run by
# `make test`). The GPU image downloads ~3.4 GB of CUDA wheels: not part of `make test`.
image: $(STAMP) system-deps
	$(PY) -m tests.support.containers cpu
image-gpu: $(STAMP) system-deps
	$(PY) -m tests.support.containers gpu

openapi: $(STAMP)
	$(PY) -m app.http.spec > openapi/openapi.json
