"""The built-in model served as a model, `/models/policy/*`, by the same code as a repository's:
every operation in X and in Y, checked against the closed forms (float64 to 1e-9, float32 to
1e-5); a batch of states or one state; JSON, npz and the Open Inference Protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.support import oracles
from tests.support.helpers import load_npz, npz_bytes

RNG = np.random.default_rng(35)
X = RNG.normal(size=(3, 4))
YS = RNG.normal(size=(2, 4))


def hessian_y(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(F, F): ∂²W_i/∂y∂y = −(Xᵀdiag(p)X − (pX)ᵀ(pX)), the same for every i."""
    p = oracles.softmax(X, y)
    pX = p @ X
    return -(X.T @ (p[:, None] * X) - np.outer(pX, pX))


def post(client: TestClient, op: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/models/policy/{op}", json={"dtype": "float64", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_jacobian_in_x_and_y_of_each_state(client: TestClient) -> None:
    out = post(client, "jacobian", inputs={"X": X.tolist(), "Y": YS.tolist()}, wrt=["X", "Y"])
    assert out["model"] == "policy" and out["dtype"] == "float64"
    for b, y in enumerate(YS):
        oracles.assert_close(out["outputs"]["W"][b], oracles.log_softmax(X, y), 1e-9)
        oracles.assert_close(out["jacobian"]["W"]["X"][b], oracles.jacobian(X, y), 1e-9)
        oracles.assert_close(out["jacobian"]["W"]["Y"][b], oracles.jacobian_y(X, y), 1e-9)


def test_the_hessian_in_y_and_in_x(client: TestClient) -> None:
    y = YS[0]
    in_y = post(client, "hessian", inputs={"X": X.tolist(), "Y": y.tolist()}, wrt=["Y"])["hessian"]["W"]["Y"]
    A = X.shape[0]
    oracles.assert_close(in_y, np.broadcast_to(hessian_y(X, y), (A, 4, 4)), 1e-9)
    in_x = post(client, "hessian", inputs={"X": X.tolist(), "Y": y.tolist()}, wrt=["X"])["hessian"]["W"]["X"]
    oracles.assert_close(in_x, oracles.hessian(X, y), 1e-9)


def test_products_in_y_and_x(client: TestClient) -> None:
    U = RNG.normal(size=(2, len(YS), X.shape[0]))  # K = 2 cotangents per state
    out = post(client, "vjp", inputs={"X": X.tolist(), "Y": YS.tolist()}, cotangents={"W": U.tolist()})
    summed = post(
        client, "vjp", inputs={"X": X.tolist(), "Y": YS.tolist()}, cotangents={"W": U.tolist()}, sum_batch=True
    )
    v = RNG.normal(size=4)
    jvp_y = post(client, "jvp", inputs={"X": X.tolist(), "Y": YS.tolist()}, tangents={"Y": [v.tolist()] * 2})
    hvp_y = post(client, "hvp", inputs={"X": X.tolist(), "Y": YS.tolist()}, tangents={"Y": [v.tolist()] * 2})
    V = RNG.normal(size=X.shape)
    hvp_x = post(client, "hvp", inputs={"X": X.tolist(), "Y": YS.tolist()}, tangents={"X": V.tolist()})
    for k in range(2):
        total = np.zeros_like(X)
        for b, y in enumerate(YS):
            uJ = oracles.vjp(X, y, U[k, b])
            oracles.assert_close(out["vjp"]["X"][k][b], uJ, 1e-9)
            oracles.assert_close(out["vjp"]["Y"][k][b], U[k, b] @ oracles.jacobian_y(X, y), 1e-9)
            total += uJ
        oracles.assert_close(summed["vjp"]["X"][k], total, 1e-9)
    for b, y in enumerate(YS):
        oracles.assert_close(jvp_y["jvp"]["W"][b], oracles.jacobian_y(X, y) @ v, 1e-9)
        oracles.assert_close(hvp_y["hvp"]["W"]["Y"][b], np.broadcast_to(hessian_y(X, y) @ v, (3, 4)), 1e-9)
        oracles.assert_close(hvp_x["hvp"]["W"]["X"][b], oracles.hvp(X, y, V), 1e-9)


def test_one_state_float32_npz_and_the_open_inference_protocol(client: TestClient) -> None:
    y = YS[1]
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    r = client.post(
        "/models/policy/jacobian",
        content=npz_bytes(**{"inputs/X": X32, "inputs/Y": y32}),
        headers={"content-type": "application/x-npz", "accept": "application/x-npz"},
    )
    assert r.status_code == 200, r.text
    got = load_npz(r.content)
    assert got["jacobian/W/X"].dtype == np.float32 and got["jacobian/W/X"].shape == (3, 3, 4)
    oracles.assert_close(got["jacobian/W/X"], oracles.jacobian(X32, y32), 1e-5)
    oracles.assert_close(got["outputs/W"], oracles.log_softmax(X32, y32), 1e-5)
    inputs = [
        {"name": "X", "datatype": "FP64", "shape": [3, 4], "data": X.ravel().tolist()},
        {"name": "Y", "datatype": "FP64", "shape": [4], "data": y.tolist()},
        {"name": "tangents/Y", "datatype": "FP64", "shape": [4], "data": y.tolist()},
    ]
    v2 = client.post("/v2/models/policy.jvp/infer", json={"inputs": inputs, "parameters": {"wrt": "Y"}})
    assert v2.status_code == 200, v2.text
    (jvp,) = (o for o in v2.json()["outputs"] if o["name"] == "jvp/W")
    assert jvp["datatype"] == "FP64" and jvp["shape"] == [3]
    oracles.assert_close(jvp["data"], oracles.jacobian_y(X, y) @ y, 1e-9)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"X": [[1.0, 2.0]], "Y": [1.0, 2.0, 3.0]},
            "inputs.Y has shape [3]: its size F (axis 0) is 3 but inputs.X's is 2",
        ),
        ({"X": [[1.0, 2.0]], "Y": [[[1.0, 2.0]]]}, "inputs.Y has shape [1, 1, 2] but Y must be shaped [any, any]"),
        ({"X": [[1.0, 2.0]], "Y": [1.0, 2.0], "Z": [1.0]}, "unknown Z"),
    ],
)
def test_bad_inputs_are_refused_with_what_is_wrong(client: TestClient, inputs: dict[str, Any], message: str) -> None:
    r = client.post("/models/policy/jacobian", json={"inputs": inputs})
    assert r.status_code == 422 and message in r.json()["message"], r.text
