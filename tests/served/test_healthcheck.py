"""`python -m app.serve.healthcheck`, the containers' health check: it asks the port the service was
configured with, not a port written into the Dockerfile."""

from __future__ import annotations

import os
import subprocess
import sys

from app.config import Settings
from app.serve.healthcheck import ready_url
from tests.support.servers import LiveServer, free_port


def _healthcheck(port: int | str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JACOBIAN_PORT": str(port), "JACOBIAN_HOST": "0.0.0.0"}
    cmd = [sys.executable, "-m", "app.serve.healthcheck"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)


def test_it_passes_on_the_configured_port_and_fails_elsewhere(live_server: LiveServer) -> None:
    port = live_server.url.rsplit(":", 1)[1]
    assert port != "8000"  # the live server is on a free port: the check must follow the setting
    assert _healthcheck(port).returncode == 0
    other = _healthcheck(free_port())
    assert other.returncode == 1 and "not ready" in other.stderr and "Connection refused" in other.stderr


def test_an_address_bound_to_everything_is_asked_on_loopback() -> None:
    assert ready_url(Settings(host="0.0.0.0", port=8001)) == "http://127.0.0.1:8001/health/ready"
    assert ready_url(Settings(host="::", port=9)) == "http://[::1]:9/health/ready"
    assert ready_url(Settings(host="10.1.2.3", port=80)) == "http://10.1.2.3:80/health/ready"
