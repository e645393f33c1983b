"""Weights pushed without a restart: PUT /models/{name}/variables makes a new version, requests
without a version get the newest, a pinned request (TF Serving's path) the one it names, the
engine keeps the newest JACOBIAN_MAX_VERSIONS, and a push during load never mixes two versions in
one answer. Its own engine and repository: pushes change what the shared one serves."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from examples import build_models
from tests.support.clients import REPOSITORY_READY_S, started_client
from tests.support.model_oracles import Oracle, variables

NPZ = "application/x-npz"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("versions")
    rng = np.random.default_rng(build_models.SEED)
    build_models.mlp(root, rng)
    build_models.wide(root, rng)
    return root


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[TestClient]:
    yield from started_client(Settings(model_repository=str(repo), xla=False, max_versions=2), REPOSITORY_READY_S)


def moved(values: dict[str, np.ndarray], scale: float, dtype: str = "float32") -> dict[str, np.ndarray]:
    return {n: (v * scale).astype(dtype) for n, v in values.items()}


def push(client: TestClient, name: str, values: dict[str, np.ndarray]) -> int:
    r = client.put(f"/models/{name}/variables", json={"variables": {k: v.tolist() for k, v in values.items()}})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == name
    return int(r.json()["version"])


def predict(client: TestClient, name: str, x: np.ndarray, version: int | None = None) -> tuple[np.ndarray, int]:
    path = f"/models/{name}/versions/{version}/predict" if version else f"/models/{name}/predict"
    r = client.post(path, json={"inputs": {"x": x.tolist()}})
    assert r.status_code == 200, r.text
    body = r.json()
    return np.asarray(body["outputs"]["y"], np.float64), int(body["version"])


def close(a: np.ndarray, b: np.ndarray, dtype: str) -> None:
    tol = 1e-5 if dtype == "float32" else 1e-9
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))


def test_a_push_makes_a_version_the_next_requests_get(client: TestClient, repo: Path, rng: Any) -> None:
    stored = variables(repo / "wide" / "1")
    oracle = Oracle("wide", repo / "wide" / "1")
    x = rng.normal(size=(3, 5))
    before, v0 = predict(client, "wide", x)
    theta = moved(stored, 0.7, "float64")
    v1 = push(client, "wide", theta)
    assert v1 == v0 + 1
    after, used = predict(client, "wide", x)
    assert used == v1
    close(after, oracle.at(theta).outputs({"x": x})["y"], "float64")
    # The version before, by TF Serving's path: as stored.
    pinned, used = predict(client, "wide", x, v0)
    assert used == v0
    close(pinned, oracle.outputs({"x": x})["y"], "float64")
    close(pinned, before, "float64")
    card = client.get("/models/wide").json()
    assert card["version"] == v1
    assert card["versions"] == [{"version": v0, "state": "available"}, {"version": v1, "state": "available"}]
    # Derivatives in the variables are at the pushed values.
    r = client.post("/models/wide/jacobian", json={"inputs": {"x": x.tolist()}, "wrt": ["variables"]})
    expected = oracle.at(theta).jacobian({"x": x}, "variables")
    for o, per_variable in expected.items():
        for v, J in per_variable.items():
            close(np.asarray(r.json()["jacobian"][o][v]), J, "float64")


def test_the_oldest_version_goes_beyond_the_limit(client: TestClient, repo: Path, rng: Any) -> None:
    stored = variables(repo / "mlp" / "1")
    x = rng.normal(size=(2, 64)).astype(np.float32)
    first = push(client, "mlp", moved(stored, 0.5))
    second = push(client, "mlp", {"dense/b2": (stored["dense/b2"] + 1).astype(np.float32)})  # some variables
    assert second == first + 1
    r = client.post("/models/mlp/versions/1/predict", json={"inputs": {"x": x.tolist()}})
    assert r.status_code == 404, r.text
    assert f"its versions are {first}, {second}" in r.json()["message"]
    # The second pushed b2 only: the rest are the first push's.
    expected = Oracle("mlp", repo / "mlp" / "1").at(moved(stored, 0.5) | {"dense/b2": stored["dense/b2"] + 1})
    got, used = predict(client, "mlp", x)
    assert used == second
    close(got, expected.outputs({"x": x})["y"], "float32")


def test_a_push_as_npz(client: TestClient, repo: Path, rng: Any) -> None:
    stored = variables(repo / "mlp" / "1")
    theta = moved(stored, 1.1)
    buf = io.BytesIO()
    np.savez(buf, **{f"variables/{k}": v for k, v in theta.items()})
    r = client.put("/models/mlp/variables", content=buf.getvalue(), headers={"Content-Type": NPZ})
    assert r.status_code == 200, r.text
    x = rng.normal(size=(2, 64)).astype(np.float32)
    got, used = predict(client, "mlp", x)
    assert used == r.json()["version"]
    close(got, Oracle("mlp", repo / "mlp" / "1").at(theta).outputs({"x": x})["y"], "float32")


@pytest.mark.parametrize(
    ("name", "body", "status", "says"),
    [
        ("mlp", {"variables": {"dense/w9": [1.0]}}, 422, "has no variable 'dense/w9'"),
        ("mlp", {"variables": {"dense/b0": [1.0, 2.0]}}, 422, "variables.dense/b0 has shape [2]"),
        ("mlp", {"variables": {}}, 422, "gives no variables"),
        ("mlp", {"values": {}}, 422, "variables"),
        ("policy", {"variables": {"X": [1.0]}}, 422, "has no trainable variables"),
        ("nothing", {"variables": {"w": [1.0]}}, 404, "Unknown model 'nothing'"),
    ],
)
def test_a_bad_push_is_refused(client: TestClient, name: str, body: Any, status: int, says: str) -> None:
    versions = client.get("/models/mlp").json()["versions"]
    r = client.put(f"/models/{name}/variables", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["message"], r.json()["message"]
    assert client.get("/models/mlp").json()["versions"] == versions  # nothing was made


def test_the_api_key_guards_the_push(repo: Path, client: TestClient) -> None:
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    for guarded in started_client(Settings(model_repository=str(repo), xla=False, api_key="k"), engine=engine):
        r = guarded.put("/models/mlp/variables", json={"variables": {"dense/b2": [0.0] * 16}})
        assert r.status_code == 401, r.text
        r = guarded.put(
            "/models/mlp/variables", json={"variables": {"dense/b2": [0.0] * 16}}, headers={"X-API-Key": "k"}
        )
        assert r.status_code == 200, r.text


def test_answers_under_pushes_are_each_one_versions(client: TestClient, repo: Path, rng: Any) -> None:
    """16 callers of predict while 20 pushes happen: every answer 200, and equal to exactly the
    outputs of the version it says (never a mix of two versions' variables)."""
    stored = variables(repo / "mlp" / "1")
    oracle = Oracle("mlp", repo / "mlp" / "1")
    x = rng.normal(size=(2, 64)).astype(np.float32)
    start = moved(stored, 0.95)
    pushed: dict[int, dict[str, np.ndarray]] = {push(client, "mlp", start): start}  # what answers start on
    done = threading.Event()

    def pusher() -> None:
        for k in range(20):
            theta = moved(stored, 1.0 + 0.05 * k)
            pushed[push(client, "mlp", theta)] = theta
        done.set()

    answers: list[tuple[np.ndarray, int]] = []

    def caller() -> None:
        while not done.is_set():
            answers.append(predict(client, "mlp", x))

    with ThreadPoolExecutor(17) as pool:
        jobs = [pool.submit(pusher)] + [pool.submit(caller) for _ in range(16)]
        for job in jobs:
            job.result()
    assert len(answers) > 20 and len({v for _, v in answers}) > 1
    for y, version in answers:
        close(y, oracle.at(pushed[version]).outputs({"x": x})["y"], "float32")


def test_a_version_by_the_open_inference_protocol(client: TestClient, repo: Path, rng: Any) -> None:
    stored = variables(repo / "wide" / "1")
    theta = moved(stored, 0.9, "float64")
    before = client.get("/models/wide").json()["version"]
    after = push(client, "wide", theta)
    x = rng.normal(size=(2, 5))
    request = {"inputs": [{"name": "x", "shape": [2, 5], "datatype": "FP64", "data": x.ravel().tolist()}]}
    oracle = Oracle("wide", repo / "wide" / "1")
    for path, version, expected in (
        ("/v2/models/wide/infer", after, oracle.at(theta)),
        (f"/v2/models/wide/versions/{before}/infer", before, None),
    ):
        r = client.post(path, json=request)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == str(version)
        if expected is not None:
            (y,) = r.json()["outputs"]
            close(np.asarray(y["data"]).reshape(y["shape"]), expected.outputs({"x": x})["y"], "float64")
    meta = client.get("/v2/models/wide").json()
    assert meta["versions"] == [str(before), str(after)]
    r = client.post("/v2/models/wide/versions/1/infer", json=request)
    assert r.status_code == 404 and f"its versions are {before}, {after}" in r.json()["error"], r.text


def test_a_versions_variables_are_read_back(client: TestClient, repo: Path) -> None:
    """GET /models/{name}/variables: the newest version's values (JSON, npz), or a named one's."""
    theta = moved(variables(repo / "wide" / "1"), 1.7, "float64")
    before = client.get("/models/wide").json()["version"]
    old = client.get("/models/wide/variables").json()
    after = push(client, "wide", theta)
    body = client.get("/models/wide/variables").json()
    assert (body["model"], body["version"]) == ("wide", after)
    assert set(body["variables"]) == set(theta)
    for k, v in theta.items():
        np.testing.assert_array_equal(np.asarray(body["variables"][k]), v)
    r = client.get("/models/wide/variables", headers={"Accept": NPZ})
    archive = np.load(io.BytesIO(r.content))
    for k, v in theta.items():
        np.testing.assert_array_equal(archive[f"variables/{k}"], v)
    assert int(archive["version"]) == after
    pinned = client.get(f"/models/wide/versions/{before}/variables").json()
    assert pinned == old and pinned["version"] == before
    r = client.get("/models/policy/variables")
    assert r.status_code == 422 and "no trainable variables" in r.json()["message"], r.text


def test_a_push_over_its_limit_is_refused_before_it_is_read(repo: Path, client: TestClient) -> None:
    """Pushes have their own body limit (weights are bigger than requests): a 413 naming it."""
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    settings = Settings(model_repository=str(repo), xla=False, max_push_bytes=1000, max_request_bytes=10**6)
    before = client.get("/models/mlp").json()["versions"]
    for small in started_client(settings, engine=engine):
        r = small.put("/models/mlp/variables", json={"variables": {"dense/b0": [0.5] * 256}})
        assert r.status_code == 413, r.text
        assert "JACOBIAN_MAX_PUSH_BYTES" in r.json()["message"]
    assert client.get("/models/mlp").json()["versions"] == before


def test_a_push_retraces_nothing(client: TestClient, repo: Path, rng: Any) -> None:
    """The traced functions take the variables' values as arguments: after a push, the next
    requests of every operation already used run the same functions (trace_count unchanged)."""
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    x = rng.normal(size=(2, 64)).astype(np.float32)
    body = {"inputs": {"x": x.tolist()}, "cotangents": {"y": np.ones((2, 16)).tolist()}, "wrt": ["variables"]}
    for op, request in (("predict", {"inputs": body["inputs"]}), ("vjp", body)):
        assert client.post(f"/models/mlp/{op}", json=request).status_code == 200
    traced = engine.trace_count
    push(client, "mlp", moved(variables(repo / "mlp" / "1"), 0.8))
    for op, request in (("predict", {"inputs": body["inputs"]}), ("vjp", body)):
        assert client.post(f"/models/mlp/{op}", json=request).status_code == 200
    assert engine.trace_count == traced


def test_a_retired_version_stays_while_a_request_holds_it() -> None:
    """Beyond the newest JACOBIAN_MAX_VERSIONS a version retires: it is still found while a request
    in flight holds it (pinned on arrival), and goes with the last such request."""
    import gc

    import tensorflow as tf

    from app.engine.versions import Versions
    from app.errors import UnknownModel

    versions = Versions("m", 1, {"w": tf.constant([1.0])}, keep=2)
    held = versions.get(0)  # a request taken in on version 1
    versions.push({"w": np.array([2.0])})
    versions.push({"w": np.array([3.0])})
    assert versions.numbers == (2, 3)
    assert versions.get(1) is held and float(held.values["w"][0]) == 1.0
    del held
    gc.collect()
    with pytest.raises(UnknownModel, match="its versions are 2, 3"):
        versions.get(1)
    assert float(versions.get(0).values["w"][0]) == 3.0
