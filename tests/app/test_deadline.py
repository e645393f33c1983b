"""A slow request does not hold the engine: a repository call whose rows earlier calls have timed
is refused before it starts when it cannot finish before its deadline, and one of many rows runs
in pieces (app.engine.costs) and stops as soon as its timed pieces show it cannot; a request for
another model sent while it runs answers in time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from examples import build_models
from tests.support import edge_models
from tests.support.clients import started_client

DEADLINE_S = 3.0


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from app.engine.derivatives import Engine

    root = tmp_path_factory.mktemp("slow")
    edge_models.save_slow(root)
    build_models.wide(root, np.random.default_rng(0))
    engine = Engine(model_repository=str(root))
    for name, width in (("slow", 8), ("wide", 5)):  # each traced and calibrated beforehand
        engine.run(
            _predict(engine, name), np.ones((1, width), np.float32 if name == "slow" else np.float64), model=name
        )
    # A budget that admits 2000 rows at once (the slow model's layers are 256 KB a row), so that the
    # deadline, not the memory claim, is what refuses them.
    settings = Settings(model_repository=str(root), deadline_s=DEADLINE_S, memory_budget_bytes=1 << 36)
    yield from started_client(settings, engine=engine)


def _predict(engine: object, name: str) -> Any:
    from app import calls

    card = engine.repository[name].card  # type: ignore[attr-defined]
    return calls.default_call(card, calls.PREDICT)


def _slow(client: TestClient, rows: int, width: int) -> tuple[int, str, float]:
    start = time.monotonic()
    r = client.post("/models/slow/predict", json={"inputs": {"x": np.ones((rows, width)).tolist()}})
    return r.status_code, r.json().get("message", ""), time.monotonic() - start


def test_a_request_that_cannot_finish_is_stopped_and_the_same_one_refused_before_it_starts(
    client: TestClient,
) -> None:
    # 2000 rows of 10-20 ms each here: its first timed pieces show it cannot finish in 3 s.
    status, message, seconds = _slow(client, 2000, 16)
    assert status == 504 and "was stopped after" in message and "of its 2000 rows" in message, message
    assert seconds < DEADLINE_S, seconds  # it did not wait for the deadline, let alone 40 s
    status, message, seconds = _slow(client, 2000, 16)
    assert status == 504 and "refused before it started: these rows need at least" in message, message
    assert seconds < 0.5, seconds  # refused before any work
    status, message, _ = _slow(client, 4, 16)
    assert status == 200, message  # a request that fits is served


def test_a_request_for_another_model_behind_a_slow_one_answers_in_time(client: TestClient) -> None:
    x = np.random.default_rng(1).normal(size=(3, 5))
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(_slow, client, 2000, 24)  # a row shape not timed yet: one row at a time first
        time.sleep(0.05)
        start = time.monotonic()
        fast = client.post("/models/wide/predict", json={"inputs": {"x": x.tolist()}})
        fast_s = time.monotonic() - start
        status, message, _ = slow.result()
    assert status == 504, message
    assert fast.status_code == 200 and fast_s < DEADLINE_S, (fast.status_code, fast_s)
    got = np.asarray(fast.json()["outputs"]["y"])
    assert got.shape == (3, 2) and np.all(np.isfinite(got))
