# syntax=docker/dockerfile:1
# GPU image by default: TensorFlow with its CUDA libraries from PyPI (tensorflow[and-cuda]);
# the host supplies only the NVIDIA driver (NVIDIA Container Toolkit).
# CPU-only image for hosts without a GPU (tensorflow-cpu):  docker build --build-arg VARIANT=cpu .
# BASE is for a mirror or a stand-in of the same Debian and Python (tests/container/base.py makes one).
ARG BASE=python:3.11.11-slim-bookworm
FROM ${BASE}

ARG VARIANT=gpu
# The app sets the two TF_* variables itself before importing TensorFlow (app/tensorflow_env.py:
# oneDNN's AVX-512 matmul segfaults on these Jacobians); they are here too for anything else run
# in the image, e.g. `docker exec ... python`.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_ENABLE_ONEDNN_OPTS=0 \
    TF_CPU_ALLOCATOR_USE_BFC=true \
    JACOBIAN_HOST=0.0.0.0 \
    JACOBIAN_PORT=8000

RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin app
WORKDIR /srv

# Dependencies first, from pyproject.toml alone (pinned there: the [cuda] extra is
# tensorflow[and-cuda], [cpu] tensorflow-cpu), so that a change to the code rebuilds only the
# layers below this one instead of reinstalling TensorFlow.
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN case "$VARIANT" in \
      gpu) extra=cuda ;; \
      cpu) extra=cpu ;; \
      *) echo "VARIANT must be gpu or cpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac \
    && python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print(*p['dependencies'], *p['optional-dependencies'][sys.argv[1]], sep='\n')" "$extra" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The service itself; its dependencies are all in the layer above.
COPY README.md ./
COPY app ./app
RUN pip install --no-cache-dir --no-deps .

USER 10001:10001
EXPOSE 8000
# Warm-up (TensorFlow import, tracing) takes ~10-30 s; give it a generous start period.
# The check reads JACOBIAN_PORT as the service does.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "app.serve.healthcheck"]
CMD ["python", "-m", "app"]
