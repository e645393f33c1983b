from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from app.config import Settings
from app.main import create_app

hypothesis_settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
hypothesis_settings.load_profile("ci")

SEED = {"X": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]], "Y": [1.0, 2.0, 3.0, 4.0]}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261126)


def wait_ready(client: TestClient, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "service did not become ready"
        time.sleep(0.05)


def started_client(settings: Settings | None = None) -> Iterator[TestClient]:
    with TestClient(create_app(settings or Settings()), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    """The real ASGI app with default settings, warmed up once for the whole run."""
    yield from started_client()


@pytest.fixture(scope="session")
def engine(client: TestClient):
    return client.app.state.engine  # type: ignore[attr-defined]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dockerfile_cmd() -> list[str]:
    """The JSON-form CMD of the Dockerfile: what the container runs."""
    import json
    from pathlib import Path

    lines = [line for line in (Path(__file__).parent.parent / "Dockerfile").read_text().splitlines()]
    cmd = [line for line in lines if line.startswith("CMD ")]
    assert len(cmd) == 1, "Dockerfile needs exactly one CMD"
    parsed: list[str] = json.loads(cmd[0][4:])
    return parsed


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen  # type: ignore[type-arg]
    log: Path


def start_live_server(tmp: Path, extra_env: dict[str, str] | None = None) -> LiveServer:
    """Run the container's own start command, outside a container, on a free loopback port."""
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "JACOBIAN_HOST": "127.0.0.1",
        "JACOBIAN_PORT": str(port),
        **(extra_env or {}),
    }
    log = tmp / f"server-{port}.log"
    proc = subprocess.Popen(dockerfile_cmd(), env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return LiveServer(url, proc, log)
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not become ready:\n" + log.read_text()[-3000:])
        time.sleep(0.2)


def stop_live_server(server: LiveServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.proc.kill()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_live_server(tmp_path_factory.mktemp("live"))
    yield server
    stop_live_server(server)
