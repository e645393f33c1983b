"""Metrics, request ids and the per-request log line."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.clients import SEED
from tests.support.helpers import metric, wait_until
from tests.support.servers import LiveServer


def test_metrics_count_requests_rejections_batches_and_outputs(client: TestClient) -> None:
    before = client.get("/metrics").text
    client.post("/jacobian", json=SEED)
    client.post("/jacobian", json={"X": [[1.0]], "Y": [1.0, 2.0]})
    text = client.get("/metrics").text
    ok = ("jacobian_requests_total", {"route": "/jacobian", "status": "200"})
    assert metric(text, ok[0], **ok[1]) == metric(before, ok[0], **ok[1]) + 1
    bad = ("jacobian_rejected_requests_total", {"reason": "invalid_input"})
    assert metric(text, bad[0], **bad[1]) == metric(before, bad[0], **bad[1]) + 1
    # Each from its own value before: earlier tests on the shared client must not satisfy them.
    assert metric(text, "jacobian_batch_rows_count") == metric(before, "jacobian_batch_rows_count") + 1
    computed = ("jacobian_compute_seconds_count", {"op": "policy.jacobian"})
    assert metric(text, computed[0], **computed[1]) == metric(before, computed[0], **computed[1]) + 1
    elements = ("jacobian_output_elements_sum", {"op": "/jacobian"})
    assert metric(text, elements[0], **elements[1]) == metric(before, elements[0], **elements[1]) + 2 + 16  # W, J
    assert metric(text, "jacobian_requests_in_progress", method="POST") == 0
    assert 'jacobian_request_seconds_bucket{le="0.5",route="/jacobian"}' in text


def test_unknown_paths_share_one_metric_label(client: TestClient) -> None:
    client.get("/wp-admin/x1")
    client.get("/wp-admin/x2")
    text = client.get("/metrics").text
    assert "/wp-admin" not in text and 'route="unmatched",status="404"' in text


def test_request_id_is_honoured_or_made_and_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="app.requests"):
        r = client.post("/jacobian", json=SEED, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    line = next(rec.getMessage() for rec in caplog.records if "abc-123" in rec.getMessage())
    assert line.startswith("POST /jacobian 200 ") and "ms request_id=abc-123" in line
    made = client.get("/health/live").headers["x-request-id"]
    assert len(made) == 32
    assert client.get("/health/live", headers={"X-Request-ID": "x" * 500}).headers["x-request-id"] != "x" * 500


def test_the_served_process_logs_one_line_per_request(live_server: LiveServer) -> None:
    """Under `python -m app` the HTTP workers are spawned by uvicorn: the line must reach them."""
    request_id = f"log-line-{uuid.uuid4().hex[:8]}"
    r = httpx.post(live_server.url + "/jacobian", json=SEED, headers={"x-request-id": request_id})
    assert r.status_code == 200
    line = rf"INFO app\.requests POST /jacobian 200 [0-9.]+ms request_id={request_id}\n"
    wait_until(lambda: re.search(line, live_server.log.read_text()) is not None, "the request's log line", 10)


def test_no_cuda_noise_greets_a_cpu_start(live_server: LiveServer) -> None:
    if Path("/proc/driver/nvidia/gpus").is_dir():
        pytest.skip("an NVIDIA GPU machine gets TensorFlow's CUDA build")
    assert "cuInit" not in live_server.log.read_text()
