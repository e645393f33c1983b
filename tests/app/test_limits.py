"""Size limits refuse work before doing it; limits come from environment variables."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.support.clients import SEED, started_client
from tests.support.helpers import NPZ, load_npz, metric, npz_bytes


@pytest.fixture(scope="module")
def small() -> Iterator[TestClient]:
    yield from started_client(Settings(max_request_bytes=4000, max_json_output_elements=1000, max_output_elements=5000))


def batches(client: TestClient) -> float:
    """Engine calls made so far, as /metrics counts them."""
    return metric(client.get("/metrics").text, "jacobian_batch_rows_count")


def test_body_over_limit_with_content_length_is_413(small: TestClient) -> None:
    body = json.dumps({"X": [[0.5] * 10] * 100, "Y": [1.0] * 10}).encode()
    r = small.post("/jacobian", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "4,000 bytes" in r.json()["message"]


def test_body_over_limit_without_content_length_is_413(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"X": ['
        for _ in range(400):
            yield b"[0.5, 0.5, 0.5, 0.5],"
        yield b'[0.5, 0.5, 0.5, 0.5]], "Y": [1, 1, 1, 1]}'

    r = small.post("/jacobian", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "JACOBIAN_MAX_REQUEST_BYTES" in r.json()["message"]


def test_json_output_over_limit_is_413_and_suggests_npz(small: TestClient) -> None:
    X = [[0.1] * 20] * 8  # J has 8·8·20 = 1280 elements > 1000 for JSON, < 5000 for npz
    before = batches(small)
    r = small.post("/jacobian", json={"X": X, "Y": [1.0] * 20})
    assert r.status_code == 413
    message = r.json()["message"]
    assert "1,000" in message and "npz" in message and "1,280" in message
    assert batches(small) == before  # refused before computing
    ok = small.post("/jacobian", json={"X": X, "Y": [1.0] * 20}, headers={"accept": NPZ})
    assert ok.status_code == 200 and load_npz(ok.content)["J"].shape == (8, 8, 20)


def test_the_open_inference_protocol_has_the_same_limits(small: TestClient) -> None:
    """JSON outputs get the JSON limit and advice to ask for binary data; binary outputs the npz one."""
    X = np.full((8, 20), 0.1)  # J: 1,280 elements, between the two limits
    doc = {
        "inputs": [
            {"name": "X", "shape": [8, 20], "datatype": "FP64", "data": X.ravel().tolist()},
            {"name": "Y", "shape": [20], "datatype": "FP64", "data": [1.0] * 20},
        ]
    }
    before = batches(small)
    r = small.post("/v2/models/jacobian/infer", json=doc)
    assert r.status_code == 413 and "1,000" in r.json()["error"] and "binary_data" in r.json()["error"]
    assert batches(small) == before
    ok = small.post("/v2/models/jacobian/infer", json={**doc, "parameters": {"binary_data_output": True}})
    assert ok.status_code == 200
    big = {**doc, "inputs": [{**doc["inputs"][0], "data": [0.5] * 160}] * 40}  # a body over 4,000 bytes
    r = small.post("/v2/models/jacobian/infer", json=big)
    assert r.status_code == 413 and "4,000 bytes" in r.json()["error"]


def test_npz_output_over_limit_is_413(small: TestClient) -> None:
    X = np.full((10, 60), 0.1, np.float32)
    r = small.post("/jacobian", content=npz_bytes(X=X, Y=np.ones(60, np.float32)), headers={"content-type": NPZ})
    assert r.status_code == 413 and "5,000" in r.json()["message"]


def test_hessian_limit_points_to_hvp(small: TestClient) -> None:
    r = small.post("/hessian", json={"X": [[0.1] * 4] * 4, "Y": [1.0] * 4})  # 4³·4² = 1024
    assert r.status_code == 413 and "/hvp" in r.json()["message"]


def test_npz_member_expanding_past_the_limit_is_413(small: TestClient) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, X=np.zeros((100, 100)), Y=np.zeros(100))  # 80 kB of zeros in ~200 bytes
    assert len(buf.getvalue()) < 4000
    r = small.post("/jacobian", content=buf.getvalue(), headers={"content-type": NPZ})
    assert r.status_code == 413 and "expands" in r.json()["message"]


def test_2000_by_2000_is_refused_before_computing(client: TestClient) -> None:
    X = np.full((2000, 2000), 0.001, np.float32)
    before = batches(client)
    t = time.perf_counter()
    r = client.post("/jacobian", content=npz_bytes(X=X, Y=np.ones(2000, np.float32)), headers={"content-type": NPZ})
    assert r.status_code == 413 and "8,000,000,000" in r.json()["message"]
    # As JSON, 2000×2000 is an 88 MB body: the body limit refuses it before the output check.
    as_json = client.post("/jacobian", json={"X": X.tolist(), "Y": [1.0] * 2000})
    assert as_json.status_code == 413 and "JACOBIAN_MAX_REQUEST_BYTES" in as_json.json()["message"]
    assert batches(client) == before and time.perf_counter() - t < 30


def test_json_body_within_limits_whose_answer_is_too_big_is_refused_by_the_output_check(client: TestClient) -> None:
    X = [[0.001] * 256] * 256  # a 1.5 MB body; J would have 256·256·256 = 16,777,216 > 2²² numbers
    before = batches(client)
    r = client.post("/jacobian", json={"X": X, "Y": [1.0] * 256})
    message = r.json()["message"]
    assert r.status_code == 413 and "16,777,216" in message and "npz" in message
    assert "JACOBIAN_MAX_REQUEST_BYTES" not in message and batches(client) == before


def test_200_by_200_hessian_is_refused(client: TestClient) -> None:
    before = batches(client)
    r = client.post("/hessian", json={"X": [[0.01] * 200] * 200, "Y": [1.0] * 200}, headers={"accept": NPZ})
    assert r.status_code == 413 and "/hvp" in r.json()["message"]
    assert batches(client) == before


def test_limits_come_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JACOBIAN_MAX_REQUEST_BYTES", "1234")
    monkeypatch.setenv("JACOBIAN_MAX_OUTPUT_ELEMENTS", "99")
    monkeypatch.setenv("JACOBIAN_DEFAULT_DTYPE", "float64")
    s = Settings()
    assert (s.max_request_bytes, s.max_output_elements, s.default_dtype) == (1234, 99, "float64")


def test_default_limits_admit_the_benchmark_sizes() -> None:
    s = Settings()
    assert s.max_json_output_elements >= 64 * 64 * 512  # 64×512 Jacobian as JSON
    assert s.max_json_output_elements >= 12**3 * 48**2  # 12×48 Hessian
    assert s.max_output_elements < 2000**3


def test_seed_still_fine(small: TestClient) -> None:
    assert small.post("/jacobian", json=SEED).status_code == 200
