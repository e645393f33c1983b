"""The app under test in this process: a started TestClient, and the seed problem."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from app.config import Settings
from app.http.app import create_app

SEED = {"X": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]], "Y": [1.0, 2.0, 3.0, 4.0]}


def wait_ready(client: TestClient, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "service did not become ready"
        time.sleep(0.05)


def started_client(
    settings: Settings | None = None, ready_timeout_s: float = 120, engine: Any = None
) -> Iterator[TestClient]:
    """The app started and ready; with `engine`, one already loaded (no second load of its models)."""
    with TestClient(create_app(settings or Settings(), engine), raise_server_exceptions=False) as client:
        wait_ready(client, ready_timeout_s)
        yield client


# An app with a test repository loads, traces and calibrates up to ten models: 40 s alone here,
# and once over 120 s in a full run of the suite (a fresh-clone run on 2026-12-03).
REPOSITORY_READY_S = 270
