"""Mixed second derivatives: `hvp` with `wrt` one input and `tangents` in another, ∂/∂x (J_a · t),
for a repository model against the JAX network (per example, K tangents) and for the built-in
model against closed forms, in X along Y and in Y along X; and what is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.app.test_model_operations import close, example_inputs, post
from tests.support.model_oracles import Oracle


@pytest.fixture
def client(repo_client: TestClient) -> TestClient:
    return repo_client


def test_a_mixed_hvp_of_a_repository_model_equals_the_oracle(client: TestClient, repo: Path, rng: Any) -> None:
    oracle = Oracle("pair", repo / "pair" / "1")
    inputs = example_inputs("pair", rng)  # a, b: (3, 3) float32
    K, B = 2, 3
    t = rng.normal(size=(K, B, 3)).astype(np.float32)  # tangents in b
    body = post(client, "pair", "hvp", inputs=inputs, wrt=["a"], tangents={"b": t})
    a64, b64 = (inputs[n].astype(np.float64) for n in ("a", "b"))
    for o in ("s", "d"):

        def f(a: Any, b: Any, o: str = o) -> Any:
            return oracle.net(oracle.params, {"a": a[None], "b": b[None]})[o][0]

        H = np.stack([np.asarray(jax.jacrev(jax.jacfwd(f, argnums=1), argnums=0)(a64[e], b64[e])) for e in range(B)])
        expected = np.einsum("eoji,kej->keoi", H, t.astype(np.float64))  # H[e, o, j (b), i (a)]
        close(body["hvp"][o]["a"], expected, "float32")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def test_the_built_in_models_mixed_hvps_equal_the_closed_forms(client: TestClient, rng: Any) -> None:
    A, F = 3, 4
    X, y = rng.normal(size=(A, F)), rng.normal(size=F)
    p = _softmax(X @ y)
    # In X along a tangent t in Y: δ_ij t_k − p_j t_k − p_j (v_j − p·v) y_k, v = X t.
    t = rng.normal(size=F)
    body = post(client, "policy", "hvp", inputs={"X": X, "Y": y}, wrt=["X"], tangents={"Y": t}, dtype="float64")
    v = X @ t
    expected = (
        np.eye(A)[:, :, None] * t[None, None, :]
        - p[None, :, None] * t[None, None, :]
        - (p * (v - p @ v))[None, :, None] * y[None, None, :]
    )
    close(body["hvp"]["W"]["X"], expected, "float64")
    # In Y along a tangent T in X: T_im − (pT)_m − Σ_j p_j s_j (X_jm − (pX)_m), s = T y.
    T = rng.normal(size=(A, F))
    body = post(client, "policy", "hvp", inputs={"X": X, "Y": y}, wrt=["Y"], tangents={"X": T}, dtype="float64")
    s = T @ y
    expected = T - (p @ T)[None, :] - ((p * s) @ (X - p @ X))[None, :]
    close(body["hvp"]["W"]["Y"], expected, "float64")


@pytest.mark.parametrize(
    ("name", "body", "says"),
    [
        ("pair", {"wrt": ["a"], "tangents": {"a": [[1.0, 2, 3]], "b": [[1.0, 2, 3]]}}, "exactly the inputs in wrt"),
        ("actions", {"wrt": ["state"], "tangents": {"action": [1]}}, "exactly the inputs in wrt"),
        ("pair", {"wrt": ["a"], "tangents": {"b": [[1.0, 2]]}}, "tangents.b has shape [1, 2]"),
    ],
)
def test_what_a_mixed_hvp_refuses(client: TestClient, name: str, body: dict[str, Any], says: str) -> None:
    inputs = {"pair": {"a": [[1.0, 2, 3]], "b": [[0.5, 0.1, 0.2]]}, "actions": {"state": [[0.1] * 4], "action": [1]}}
    r = client.post(f"/models/{name}/hvp", json={"inputs": inputs[name], **body})
    assert r.status_code == 422, r.text
    assert says in r.json()["message"], r.json()["message"]
