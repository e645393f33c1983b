"""The deadline through the engine process (app/serve/engine_process.py), as tests/app/test_deadline.py
checks it in process: a request of many slow rows is stopped as soon as its timed pieces show it
cannot finish, the same request is then refused before it starts, and a request for another
model sent meanwhile answers in time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from examples import build_models
from tests.support import edge_models, servers

DEADLINE_S = 3.0


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("slow")
    edge_models.save_slow(root)
    build_models.wide(root, np.random.default_rng(0))
    # A budget that admits 2000 rows at once (the slow model's layers are 256 KB a row), so that the
    # deadline, not the memory claim, is what refuses them.
    env = {
        "JACOBIAN_MODEL_REPOSITORY": str(root),
        "JACOBIAN_DEADLINE_S": str(DEADLINE_S),
        "JACOBIAN_MEMORY_BUDGET_BYTES": str(1 << 36),
    }
    with servers.running(tmp_path_factory.mktemp("server"), env) as server:
        with httpx.Client(timeout=60) as http:  # each model's predict traced and calibrated first
            http.post(f"{server.url}/models/slow/predict", json={"inputs": {"x": [[1.0] * 8]}})
            http.post(f"{server.url}/models/wide/predict", json={"inputs": {"x": [[1.0] * 5]}})
        yield server.url


def _slow(url: str, rows: int, width: int) -> tuple[int, str, float]:
    start = time.monotonic()
    r = httpx.post(f"{url}/models/slow/predict", json={"inputs": {"x": np.ones((rows, width)).tolist()}}, timeout=60)
    return r.status_code, r.json().get("message", ""), time.monotonic() - start


def test_a_slow_request_is_stopped_then_refused_and_another_model_answers_meanwhile(url: str, tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(3, 5))
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(_slow, url, 2000, 16)  # 10-20 ms a row here: 20-40 s
        time.sleep(0.05)
        start = time.monotonic()
        fast = httpx.post(f"{url}/models/wide/predict", json={"inputs": {"x": x.tolist()}}, timeout=60)
        fast_s = time.monotonic() - start
        status, message, seconds = slow.result()
    assert status == 504 and "was stopped after" in message and "of its 2000 rows" in message, message
    assert seconds < DEADLINE_S, seconds
    assert fast.status_code == 200 and fast_s < DEADLINE_S, (fast.status_code, fast_s)
    status, message, seconds = _slow(url, 2000, 16)
    assert status == 504 and "refused before it started" in message, message
    assert seconds < 0.5, seconds
