"""Errors and binary answers of the Open Inference Protocol through the app: the protocol's error
shape, and the binary-data headers of an answer."""

from __future__ import annotations

import numpy as np
import orjson
from fastapi.testclient import TestClient

from tests.support.v2 import X, Y, tensor, v2_body


def test_errors_under_v2_take_the_protocols_shape(client: TestClient) -> None:
    bad = {"inputs": [tensor("X", X), tensor("Y", np.ones(5))]}
    r = client.post("/v2/models/jacobian/infer", content=orjson.dumps(bad))
    assert r.status_code == 400 and set(r.json()) == {"error"} and "columns" in r.json()["error"]
    r = client.post("/v2/models/softmax/infer", content=orjson.dumps(bad))
    assert r.status_code == 404 and "Unknown model" in r.json()["error"]
    r = client.get("/v2/nothing/here")
    assert r.status_code == 404 and set(r.json()) == {"error"}
    r = client.post("/v2/models/jacobian/infer", content=b"{not json")
    assert r.status_code == 400 and "not valid" in r.json()["error"]
    # The native API keeps its own shape.
    r = client.post("/jacobian", json={"X": X.tolist(), "Y": [1.0]})
    assert r.status_code == 422 and set(r.json()) == {"code", "message", "details"}


def test_binary_answer_headers(client: TestClient) -> None:
    body, length = v2_body(
        {
            "inputs": [tensor("X", X, binary=True), tensor("Y", Y, binary=True)],
            "parameters": {"binary_data_output": True},
        },
        X,
        Y,
    )
    r = client.post("/v2/models/jacobian/infer", content=body, headers={"Inference-Header-Content-Length": str(length)})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    n = int(r.headers["inference-header-content-length"])
    head = orjson.loads(r.content[:n])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert n + sum(sizes) == len(r.content)
    W = np.frombuffer(r.content[n : n + sizes[0]], np.float64)
    z = X @ Y
    np.testing.assert_allclose(W, z - np.log(np.exp(z).sum()), rtol=1e-12)
