"""A second model, defined here only: W = tanh(X·Y), added by one `app.engine.models.register`
call and served by every operation over native JSON, npz and the Open Inference Protocol, each
answer checked against tanh's closed form (float64, 1e-9 relative). Its Hessian is not shared
across outputs, so it runs the engine's full nested-tape Hessian.

With z = X·y and s_i = 1 − tanh²(z_i): ∂W_i/∂X_jk = δ_ij s_i y_k, ∂W_i/∂y_k = s_i X_ik,
∂²W_i/∂X_jk∂X_lm = δ_ij δ_il (−2 W_i s_i) y_k y_m."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from app import ops
from app.engine import models
from tests.support.clients import started_client
from tests.support.helpers import NPZ, load_npz, npz_bytes
from tests.support.oracles import assert_close

NAME = "tanh"
REL = 1e-9


def _tanh_rows(Xr: tf.Tensor, Yr: tf.Tensor) -> tf.Tensor:
    return tf.tanh(tf.linalg.matvec(Xr, Yr))


@pytest.fixture(scope="module")
def tanh_client() -> Iterator[TestClient]:
    models.register(ops.Model(NAME, "tanh(X·Y)"), _tanh_rows)
    try:
        yield from started_client()
    finally:  # the other tests' app (and its spec) has the built-in model only
        del models.MODELS[NAME], ops.MODELS[NAME]


def _oracle(op: str, X: np.ndarray, y: np.ndarray, extra: np.ndarray | None) -> dict[str, np.ndarray]:
    """One state's closed-form answer; `extra` is V (hvp, jvp: (K,) A×F) or U (vjp: (K,) A)."""
    W = np.tanh(X @ y)
    s = 1 - W**2
    eye = np.eye(len(W))
    J = np.einsum("ij,i,k->ijk", eye, s, y)
    c = -2 * W * s  # d²W_i/dz_i²
    if op == "jacobian":
        return {"W": W, "J": J, "J_Y": s[:, None] * X}
    if op == "hessian":
        return {"W": W, "H": np.einsum("ij,il,i,k,m->ijklm", eye, eye, c, y, y)}
    assert extra is not None
    if op == "hvp":
        return {"W": W, "HV": np.einsum("ij,i,k,i->ijk", eye, c, y, extra @ y)}
    if op == "vjp":
        return {"W": W, "UJ": np.einsum("...j,j,k->...jk", extra, s, y)}
    return {"W": W, "JV": s * np.einsum("...jk,k->...j", extra, y)}  # jvp


EXTRA = {"hvp": "V", "vjp": "U", "jvp": "V"}
OUTPUT = {"jacobian": "J", "hessian": "H", "hvp": "HV", "vjp": "UJ", "jvp": "JV"}


def _problem(op: str, batch: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    A, F, B, K = 3, 4, 2, 2
    arrays = {"X": rng.normal(size=(A, F)) / 2, "Y": rng.normal(size=(B, F) if batch else F) / 2}
    if op in ("hvp", "jvp"):
        arrays["V"] = rng.normal(size=(K, A, F) if op == "jvp" else (A, F))
    if op == "vjp":
        arrays["U"] = rng.normal(size=(K, B, A) if batch else (K, A))
    return arrays


def _expected(op: str, arrays: dict[str, np.ndarray], batch: bool) -> dict[str, np.ndarray]:
    """The closed form, state by state; the products keep K first (K, B, ...), as the API does."""
    X, states = arrays["X"], arrays["Y"] if batch else arrays["Y"][None]
    extra = arrays.get(EXTRA.get(op, ""))
    per_state = []
    for b, y in enumerate(states):
        e = extra[:, b] if op == "vjp" and batch and extra is not None else extra
        per_state.append(_oracle(op, X, y, e))
    axis = 1 if op in ("vjp", "jvp") else 0
    stacked = {name: np.stack([s[name] for s in per_state], axis=0 if name == "W" else axis) for name in per_state[0]}
    return stacked if batch else {name: a[0] if name == "W" or axis == 0 else a[:, 0] for name, a in stacked.items()}


def _check(got: dict[str, Any], expected: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
    for name in names:
        actual = np.asarray(got[name], dtype=np.float64)
        assert actual.shape == expected[name].shape, (name, actual.shape, expected[name].shape)
        assert_close(actual, expected[name], rel=REL)


OPS = ("jacobian", "hessian", "hvp", "vjp", "jvp")
BATCH = pytest.mark.parametrize("batch", [False, True], ids=["one state", "batch"])


@pytest.mark.parametrize("op", OPS)
@BATCH
def test_every_operation_over_json(tanh_client: TestClient, rng: np.random.Generator, op: str, batch: bool) -> None:
    arrays = _problem(op, batch, rng)
    body: dict[str, Any] = {k: v.tolist() for k, v in arrays.items()} | {"dtype": "float64"}
    if op == "jacobian":
        body["wrt"] = ["X", "Y"]
    r = tanh_client.post(f"/models/{NAME}/{op}", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["dtype"] == "float64"
    _check(r.json(), _expected(op, arrays, batch), ("W", OUTPUT[op]) + (("J_Y",) if op == "jacobian" else ()))


@pytest.mark.parametrize("op", OPS)
@BATCH
def test_every_operation_over_npz(tanh_client: TestClient, rng: np.random.Generator, op: str, batch: bool) -> None:
    arrays = _problem(op, batch, rng)
    r = tanh_client.post(
        f"/models/{NAME}/{op}", content=npz_bytes(**arrays), headers={"content-type": NPZ, "accept": NPZ}
    )
    assert r.status_code == 200, r.text
    _check(load_npz(r.content), _expected(op, arrays, batch), ("W", OUTPUT[op]))


@pytest.mark.parametrize("op", OPS)
@BATCH
def test_every_operation_over_the_inference_protocol(
    tanh_client: TestClient, rng: np.random.Generator, op: str, batch: bool
) -> None:
    arrays = _problem(op, batch, rng)
    model = f"{NAME}.{op}"
    meta = tanh_client.get(f"/v2/models/{model}")
    assert meta.status_code == 200 and meta.json()["name"] == model
    assert tanh_client.get(f"/v2/models/{model}/ready").status_code == 200
    tensors = [
        {"name": k, "shape": list(v.shape), "datatype": "FP64", "data": v.ravel().tolist()} for k, v in arrays.items()
    ]
    r = tanh_client.post(f"/v2/models/{model}/infer", content=orjson.dumps({"inputs": tensors}))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model_name"] == model
    got = {t["name"]: np.reshape(t["data"], t["shape"]) for t in answer["outputs"]}
    _check(got, _expected(op, arrays, batch), ("W", OUTPUT[op]))


def test_the_built_in_model_is_unchanged_beside_it(tanh_client: TestClient, rng: np.random.Generator) -> None:
    X, y = rng.normal(size=(3, 4)), rng.normal(size=4)
    native = tanh_client.post("/jacobian", json={"X": X.tolist(), "Y": y.tolist(), "dtype": "float64"}).json()
    z = X @ y
    assert_close(np.array(native["W"]), z - np.log(np.exp(z).sum()), rel=REL)
    listed = tanh_client.get("/openapi.json").json()["paths"]
    assert {f"/models/{NAME}/{op}" for op in OPS} <= set(listed) and {f"/{op}" for op in OPS} <= set(listed)


def test_the_finite_difference_agrees(tanh_client: TestClient, rng: np.random.Generator) -> None:
    """Independently of the closed form: the served J against central differences of the served W."""
    X, y = rng.normal(size=(3, 4)) / 2, rng.normal(size=4) / 2

    def served(X: np.ndarray) -> dict[str, Any]:
        r = tanh_client.post(f"/models/{NAME}/jacobian", json={"X": X.tolist(), "Y": y.tolist(), "dtype": "float64"})
        assert r.status_code == 200, r.text
        return dict(r.json())

    J, h = np.array(served(X)["J"]), 1e-5
    numeric = np.zeros_like(J)
    for j, k in np.ndindex(X.shape):
        step = np.zeros_like(X)
        step[j, k] = h
        numeric[:, j, k] = (np.array(served(X + step)["W"]) - np.array(served(X - step)["W"])) / (2 * h)
    assert_close(J, numeric, rel=1e-7)
