"""Variables per request: every operation of a repository model at the caller's values of some or
all of its trainable variables (`variables`), JSON and npz, against the JAX networks at those
values (tests/support/model_oracles.py); the stored values untouched; each bad variable refused
by name before any work."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.app.test_model_operations import DTYPE, NPZ, close, example_inputs, post
from tests.support.model_oracles import Oracle, variables
from tests.support.v2 import tensor, v2_body


@pytest.fixture
def client(repo_client: TestClient) -> TestClient:
    return repo_client


@pytest.fixture(scope="module")
def stored(repo: Path) -> dict[str, dict[str, np.ndarray]]:
    return {n: variables(repo / n / "1") for n in ("mlp", "wide", "policy_mlp", "pair")}


def moved(values: dict[str, np.ndarray], rng: Any, dtype: str, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Other values for `names` (every variable by default), of the model's dtype."""
    chosen = names if names is not None else list(values)
    return {n: (values[n] * 1.3 + 0.1 * rng.normal(size=values[n].shape)).astype(dtype) for n in chosen}


@pytest.mark.parametrize("name", ["mlp", "wide"])
def test_predict_and_jacobians_at_the_callers_variables(
    client: TestClient, stored: dict[str, dict[str, np.ndarray]], repo: Path, name: str, rng: Any
) -> None:
    dtype = DTYPE[name]
    theta = moved(stored[name], rng, dtype)
    oracle = Oracle(name, repo / name / "1").at(theta)
    inputs = example_inputs(name, rng)
    body = post(client, name, "predict", inputs=inputs, variables=theta)
    for o, y in oracle.outputs(inputs).items():
        close(body["outputs"][o], y, dtype)
    body = post(client, name, "jacobian", inputs=inputs, wrt=["x", "variables"], variables=theta)
    for o, J in oracle.jacobian(inputs, "x").items():
        close(body["jacobian"][o]["x"], J, dtype)
    for o, per_variable in oracle.jacobian(inputs, "variables").items():
        for v, J in per_variable.items():
            close(body["jacobian"][o][v], J, dtype)
    # The stored values are not changed by a request: without variables, the stored network.
    plain = post(client, name, "predict", inputs=inputs)
    for o, y in Oracle(name, repo / name / "1").outputs(inputs).items():
        close(plain["outputs"][o], y, dtype)


def test_some_variables_given_the_others_stored(
    client: TestClient, stored: dict[str, dict[str, np.ndarray]], repo: Path, rng: Any
) -> None:
    theta = moved(stored["mlp"], rng, "float32", ["dense/w1", "dense/b2"])
    oracle = Oracle("mlp", repo / "mlp" / "1").at(theta)
    inputs = example_inputs("mlp", rng)
    body = post(client, "mlp", "predict", inputs=inputs, variables=theta)
    close(body["outputs"]["y"], oracle.outputs(inputs)["y"], "float32")


def test_the_policy_gradient_at_the_learners_parameters(
    client: TestClient, stored: dict[str, dict[str, np.ndarray]], repo: Path, rng: Any
) -> None:
    theta = moved(stored["policy_mlp"], rng, "float32")
    oracle = Oracle("policy_mlp", repo / "policy_mlp" / "1").at(theta)
    inputs = example_inputs("policy_mlp", rng, batch=16)
    cotangent = (np.eye(4)[rng.integers(0, 4, size=16)] * rng.normal(size=16)[:, None]).astype(np.float32)
    body = post(
        client,
        "policy_mlp",
        "vjp",
        inputs=inputs,
        cotangents={"log_probs": cotangent},
        wrt=["variables"],
        sum_batch=True,
        variables=theta,
    )
    expected = oracle.vjp_variables(inputs, {"log_probs": cotangent})
    assert set(body["vjp"]) == set(expected)
    for v, g in expected.items():
        close(body["vjp"][v], g, "float32")


@pytest.mark.parametrize("name", ["wide", "pair"])
def test_products_and_second_derivatives_at_the_callers_variables(
    client: TestClient, stored: dict[str, dict[str, np.ndarray]], repo: Path, name: str, rng: Any
) -> None:
    dtype, x = DTYPE[name], {"wide": "x", "pair": "a"}[name]
    theta = moved(stored[name], rng, dtype)
    oracle = Oracle(name, repo / name / "1").at(theta)
    inputs = example_inputs(name, rng)
    outputs = oracle.outputs(inputs)
    J, H = oracle.jacobian(inputs, x), oracle.hessian(inputs, x)
    K, B = 2, 3
    tan = rng.normal(size=(K, *inputs[x].shape)).astype(dtype)
    cot = {o: rng.normal(size=(K, *y.shape)).astype(dtype) for o, y in outputs.items()}
    jvp = post(client, name, "jvp", inputs=inputs, tangents={x: tan}, variables=theta)
    vjp = post(client, name, "vjp", inputs=inputs, cotangents=cot, wrt=[x], variables=theta)
    hes = post(client, name, "hessian", inputs=inputs, wrt=[x], variables=theta)
    hvp = post(client, name, "hvp", inputs=inputs, tangents={x: tan}, variables=theta)
    n = inputs[x].shape[1]
    expected_vjp = sum(np.einsum("kbo,boi->kbi", cot[o].reshape(K, B, -1), J[o].reshape(B, -1, n)) for o in outputs)
    close(vjp["vjp"][x], expected_vjp, dtype)
    for o, y in outputs.items():
        per = y[0].size
        close(jvp["jvp"][o], np.einsum("boi,kbi->kbo", J[o].reshape(B, per, n), tan).reshape(K, *y.shape), dtype)
        close(hes["hessian"][o][x], H[o], dtype)
        expected_hvp = np.einsum("boij,kbj->kboi", H[o].reshape(B, per, n, n), tan).reshape(K, *y.shape, n)
        close(hvp["hvp"][o][x], expected_hvp, dtype)


def test_variables_as_npz_members(
    client: TestClient, stored: dict[str, dict[str, np.ndarray]], repo: Path, rng: Any
) -> None:
    theta = moved(stored["wide"], rng, "float64")
    oracle = Oracle("wide", repo / "wide" / "1").at(theta)
    inputs = example_inputs("wide", rng)
    buf = io.BytesIO()
    np.savez(buf, **{"inputs/x": inputs["x"]}, **{f"variables/{k}": v for k, v in theta.items()})
    r = client.post(
        "/models/wide/jacobian?wrt=variables", content=buf.getvalue(), headers={"Content-Type": NPZ, "Accept": NPZ}
    )
    assert r.status_code == 200, r.text
    answer = np.load(io.BytesIO(r.content))
    for o, per_variable in oracle.jacobian(inputs, "variables").items():
        for v, J in per_variable.items():
            close(answer[f"jacobian/{o}/{v}"], J, "float64")


def test_concurrent_requests_each_at_their_own_variables(
    client: TestClient, stored: dict[str, dict[str, np.ndarray]], repo: Path, rng: Any
) -> None:
    """Requests with different values are never stacked into one call: each answer is its own."""
    inputs = example_inputs("mlp", rng, batch=2)
    thetas = [moved(stored["mlp"], rng, "float32") for _ in range(6)] + [{}] * 2
    base = Oracle("mlp", repo / "mlp" / "1")

    def one(theta: dict[str, np.ndarray]) -> np.ndarray:
        body = post(client, "mlp", "predict", inputs=inputs, **({"variables": theta} if theta else {}))
        return np.asarray(body["outputs"]["y"])

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, thetas))
    for theta, got in zip(thetas, answers, strict=True):
        close(got, base.at(theta).outputs(inputs)["y"], "float32")


W0 = [[0.0] * 256] * 64


@pytest.mark.parametrize(
    ("name", "variables", "says"),
    [
        ("mlp", {"dense/w9": W0}, "has no variable 'dense/w9'"),
        ("mlp", {"dense/w0": [[0.0] * 255] * 64}, "variables.dense/w0 has shape [64, 255]"),
        ("mlp", {"dense/w0": [["a"] * 256] * 64}, "variables.dense/w0 must hold numbers"),
        ("mlp", {"dense/w0": [[True] * 256] * 64}, "variables.dense/w0 must hold numbers"),
        ("mlp", {"dense/w0": [[float("nan")] * 256] * 64}, "variables.dense/w0 contains NaN"),
        ("mlp", {"dense/w0": [[1e300] * 256] * 64}, "variables.dense/w0 has entries too large for float32"),
        ("policy", {"X": [[1.0]]}, "has no trainable variables"),
    ],
)
def test_each_bad_variable_is_refused_by_name(client: TestClient, name: str, variables: Any, says: str) -> None:
    inputs = {"mlp": {"x": [[0.0] * 64]}, "policy": {"X": [[1.0]], "Y": [1.0]}}[name]
    body = json.dumps({"inputs": inputs, "variables": variables})  # NaN as JSON's NaN token
    r = client.post(f"/models/{name}/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert says in r.json()["message"], r.json()["message"]


def test_variables_as_v2_inputs(
    client: TestClient, stored: dict[str, dict[str, np.ndarray]], repo: Path, rng: Any
) -> None:
    """`variables/<name>` inputs, JSON and binary data; the metadata lists them as optional."""
    theta = moved(stored["wide"], rng, "float64", ["dense/w0", "dense/b1"])
    oracle = Oracle("wide", repo / "wide" / "1").at(theta)
    x = example_inputs("wide", rng)["x"]
    w0, b1 = theta["dense/w0"], theta["dense/b1"]
    request = {
        "inputs": [
            tensor("x", x),
            tensor("variables/dense/w0", w0, binary=True),
            tensor("variables/dense/b1", b1),
        ],
        "parameters": {"wrt": "variables"},
    }
    body, length = v2_body(request, w0)
    r = client.post(
        "/v2/models/wide.jacobian/infer", content=body, headers={"Inference-Header-Content-Length": str(length)}
    )
    assert r.status_code == 200, r.text
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}
    for o, per_variable in oracle.jacobian({"x": x}, "variables").items():
        for v, J in per_variable.items():
            close(outputs[f"jacobian/{o}/{v}"], J, "float64")
    meta = client.get("/v2/models/wide.jacobian").json()
    optional = {t["name"]: t for t in meta["inputs"] if t.get("optional")}
    assert set(optional) == {f"variables/{v}" for v in stored["wide"]}
    assert optional["variables/dense/w0"]["shape"] == list(w0.shape)
    assert all("optional" not in t for t in client.get("/v2/models/jacobian").json()["inputs"])
