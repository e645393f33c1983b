"""The memory budget through the app: a request over the whole budget is refused before any
compute, one within it is served and its claim returned."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.support import oracles
from tests.support.clients import started_client
from tests.support.helpers import NPZ, load_npz, metric, npz_bytes
from tests.support.oracles import assert_close

GiB = 1 << 30


@pytest.fixture(scope="module")
def tight() -> TestClient:
    # 64 MiB: a 64×512 float64 Jacobian fits (about 53 MiB), a 128×1024 one (about 350 MiB) never can.
    yield from started_client(Settings(memory_budget_bytes=64 * 2**20, xla=False))


def test_a_request_over_the_whole_budget_is_413_before_any_compute(tight: TestClient, rng: np.random.Generator) -> None:
    batcher = tight.app.state.runtime.service.batcher  # type: ignore[attr-defined]
    before = metric(tight.get("/metrics").text, "jacobian_batch_rows_count")
    X, Y = rng.normal(size=(128, 1024)), rng.normal(size=1024) / 32
    r = tight.post("/jacobian", content=npz_bytes(X=X, Y=Y), headers={"content-type": NPZ, "accept": NPZ})
    assert r.status_code == 413
    body = r.json()
    assert body["code"] == "over_memory_budget"
    assert "JACOBIAN_MEMORY_BUDGET_BYTES" in body["message"] and "67,108,864" in body["message"]
    assert metric(tight.get("/metrics").text, "jacobian_batch_rows_count") == before
    assert batcher.ledger.claimed == 0
    assert metric(tight.get("/metrics").text, "jacobian_rejected_requests_total", reason="over_memory_budget") >= 1


def test_a_request_within_the_budget_is_served_and_its_claim_returned(
    tight: TestClient, rng: np.random.Generator
) -> None:
    X, Y = rng.normal(size=(64, 512)), rng.normal(size=512) / 16
    r = tight.post("/jacobian", content=npz_bytes(X=X, Y=Y), headers={"content-type": NPZ, "accept": NPZ})
    assert r.status_code == 200
    assert_close(load_npz(r.content)["J"], oracles.jacobian(X, Y), 1e-9)
    assert tight.app.state.runtime.service.batcher.ledger.claimed == 0  # type: ignore[attr-defined]
    ready = tight.get("/health/ready").json()
    assert ready["memory_budget_bytes"] == 64 * 2**20 and ready["memory_claimed_bytes"] == 0
    assert metric(tight.get("/metrics").text, "jacobian_memory_budget_bytes") == 64 * 2**20
