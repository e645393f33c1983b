"""POST /models/{name}/{operation} for the example repository (examples/build_models.py), through
the app: every operation against the same networks written in JAX from the SavedModels' variables
(tests/support/model_oracles.py) and against central differences of the served forward pass in
float64; per-example and whole Jacobians, K products, sum_batch, variables, JSON and npz; an op
without a gradient on one output's path (tf.linalg.logm) refused for that pair only, a tf.round
path served as zeros; a broken model beside served ones; and each bad input a 4xx that says what
is wrong."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from app.config import Settings
from tests.support.clients import started_client
from tests.support.model_oracles import Oracle

NPZ = "application/x-npz"


@pytest.fixture
def client(repo_client: TestClient) -> TestClient:
    return repo_client


@pytest.fixture(scope="module")
def oracles(repo: Path) -> dict[str, Oracle]:
    names = ("policy_mlp", "mlp", "pair", "actions", "wide")
    return {n: Oracle(n, repo / n / "1") for n in names} | {"whole": Oracle("wide", repo / "whole" / "1")}


def example_inputs(name: str, rng: np.random.Generator, batch: int = 3) -> dict[str, np.ndarray]:
    f32 = np.float32
    return {
        "policy_mlp": lambda: {"state": rng.normal(size=(batch, 8)).astype(f32)},
        "mlp": lambda: {"x": rng.normal(size=(batch, 64)).astype(f32)},
        "pair": lambda: {"a": rng.normal(size=(batch, 3)).astype(f32), "b": rng.normal(size=(batch, 3)).astype(f32)},
        "actions": lambda: {
            "state": rng.normal(size=(batch, 4)).astype(f32),
            "action": rng.integers(0, 3, size=batch).astype(np.int32),
        },
        "wide": lambda: {"x": rng.normal(size=(batch, 5))},
        "whole": lambda: {"x": rng.normal(size=(batch, 5))},
    }[name]()


def post(client: TestClient, name: str, op: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/models/{name}/{op}", json=_lists(body))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value.tolist() if isinstance(value, np.ndarray) else value


def close(served: Any, expected: np.ndarray, dtype: str) -> None:
    """float64 to 1e-9 relative, float32 to 1e-5 (of the largest entry, for entries near zero)."""
    tol = 1e-9 if dtype == "float64" else 1e-5
    a = np.asarray(served, dtype=np.float64)
    assert a.shape == expected.shape
    np.testing.assert_allclose(a, expected, rtol=tol, atol=tol * max(1.0, float(np.abs(expected).max())))


DTYPE = {"policy_mlp": "float32", "mlp": "float32", "pair": "float32", "actions": "float32", "wide": "float64"}
MODELS = list(DTYPE)


@pytest.mark.parametrize("name", MODELS)
def test_predict_equals_the_oracle(client: TestClient, oracles: dict[str, Oracle], name: str, rng: Any) -> None:
    inputs = example_inputs(name, rng)
    body = post(client, name, "predict", inputs=inputs)
    assert body["model"] == name and body["version"] == 1 and body["dtype"] == DTYPE[name]
    assert body["device"].startswith("/device:")
    for k, expected in oracles[name].outputs(inputs).items():
        close(body["outputs"][k], expected, DTYPE[name])


WRT = [("policy_mlp", "state"), ("mlp", "x"), ("pair", "a"), ("pair", "b"), ("actions", "state"), ("wide", "x")]


@pytest.mark.parametrize(("name", "wrt"), WRT)
def test_per_example_jacobians_equal_the_oracle(
    client: TestClient, oracles: dict[str, Oracle], name: str, wrt: str, rng: Any
) -> None:
    inputs = example_inputs(name, rng)
    body = post(client, name, "jacobian", inputs=inputs, wrt=[wrt])
    expected = oracles[name].jacobian(inputs, wrt)
    assert set(body["jacobian"]) == set(expected)
    for out, J in expected.items():
        assert list(body["jacobian"][out]) == [wrt]
        close(body["jacobian"][out][wrt], J, DTYPE[name])


@pytest.mark.parametrize("name", ["policy_mlp", "pair", "wide", "actions"])
def test_jacobians_in_the_variables_equal_the_oracle(
    client: TestClient, oracles: dict[str, Oracle], name: str, rng: Any
) -> None:
    inputs = example_inputs(name, rng, batch=2)
    body = post(client, name, "jacobian", inputs=inputs, wrt=["variables"])
    expected = oracles[name].jacobian(inputs, "variables")
    for out, per_variable in expected.items():
        assert set(body["jacobian"][out]) == set(per_variable)
        for v, J in per_variable.items():
            close(body["jacobian"][out][v], J, DTYPE[name])


def test_the_policy_gradient_in_one_call(client: TestClient, oracles: dict[str, Oracle], rng: Any) -> None:
    """Σ_b A_b ∇_θ log π(a_b|s_b): one-hot cotangents times advantages, wrt variables, sum_batch."""
    inputs = example_inputs("policy_mlp", rng, batch=16)
    actions, advantages = rng.integers(0, 4, size=16), rng.normal(size=16)
    cotangent = (np.eye(4)[actions] * advantages[:, None]).astype(np.float32)
    body = post(
        client,
        "policy_mlp",
        "vjp",
        inputs=inputs,
        cotangents={"log_probs": cotangent},
        wrt=["variables"],
        sum_batch=True,
    )
    expected = oracles["policy_mlp"].vjp_variables(inputs, {"log_probs": cotangent})
    assert set(body["vjp"]) == set(expected)
    for v, g in expected.items():
        close(body["vjp"][v], g, "float32")


@pytest.mark.parametrize("name", ["pair", "wide", "policy_mlp"])
def test_vjp_and_jvp_with_k_products(client: TestClient, oracles: dict[str, Oracle], name: str, rng: Any) -> None:
    inputs = example_inputs(name, rng)
    dtype = DTYPE[name]
    outputs = oracles[name].outputs(inputs)
    wrt = sorted(k for k, v in inputs.items() if v.dtype.kind == "f")
    J = {x: oracles[name].jacobian(inputs, x) for x in wrt}  # input -> output -> (B, *o, *i)
    K = 4
    cot = {o: rng.normal(size=(K, *v.shape)).astype(dtype) for o, v in outputs.items()}
    body = post(client, name, "vjp", inputs=inputs, cotangents=cot, wrt=wrt)
    for x in wrt:
        expected = sum(
            np.einsum("kbo,boi->kbi", cot[o].reshape(K, 3, -1), J[x][o].reshape(3, cot[o][0, 0].size, -1))
            for o in outputs
        ).reshape(K, *inputs[x].shape)
        close(body["vjp"][x], expected, dtype)
    # One cotangent without the K axis (a plain reverse pass) equals the first of the K; variables too.
    both = [*wrt, "variables"]
    k_first = post(client, name, "vjp", inputs=inputs, cotangents=cot, wrt=both)
    single = post(client, name, "vjp", inputs=inputs, cotangents={o: c[0] for o, c in cot.items()}, wrt=both)
    assert set(single["vjp"]) == set(k_first["vjp"])
    for w, g in single["vjp"].items():
        close(g, np.asarray(k_first["vjp"][w], np.float64)[0], dtype)
    tan = {x: rng.normal(size=(K, *inputs[x].shape)).astype(dtype) for x in wrt}
    body = post(client, name, "jvp", inputs=inputs, tangents=tan)
    for o, y in outputs.items():
        expected = sum(
            np.einsum("boi,kbi->kbo", J[x][o].reshape(3, y[0].size, -1), tan[x].reshape(K, 3, -1)) for x in wrt
        ).reshape(K, *y.shape)
        close(body["jvp"][o], expected, dtype)
    # Without the K axis: one product, shaped like the input (vjp) or the output (jvp).
    one = post(client, name, "jvp", inputs=inputs, tangents={x: t[0] for x, t in tan.items()})
    for o in outputs:
        close(one["jvp"][o], np.asarray(body["jvp"][o], np.float64)[0], dtype)


@pytest.mark.parametrize(("name", "wrt"), [("wide", "x"), ("pair", "a"), ("policy_mlp", "state")])
def test_hessians_and_hvps_equal_the_oracle(
    client: TestClient, oracles: dict[str, Oracle], name: str, wrt: str, rng: Any
) -> None:
    inputs = example_inputs(name, rng, batch=2)
    dtype = DTYPE[name]
    expected = oracles[name].hessian(inputs, wrt)
    body = post(client, name, "hessian", inputs=inputs, wrt=[wrt])
    for o, H in expected.items():
        close(body["hessian"][o][wrt], H, dtype)
    K, n = 3, inputs[wrt][0].size
    tangents = rng.normal(size=(K, *inputs[wrt].shape)).astype(dtype)
    body = post(client, name, "hvp", inputs=inputs, wrt=[wrt], tangents={wrt: tangents})
    for o, H in expected.items():
        lead = H.shape[: H.ndim - 2 * (inputs[wrt].ndim - 1)]  # (B, *o)
        flat = H.reshape(*lead, n, n)
        hv = np.einsum("b...ij,kbj->kb...i", flat, tangents.reshape(K, 2, n)).reshape(K, *lead, *inputs[wrt].shape[1:])
        close(body["hvp"][o][wrt], hv, dtype)


def _five_point(f: Any, x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """∂f/∂x by the five-point stencil (error O(h⁴)): (*f(x).shape, *x.shape)."""
    y = f(x)
    J = np.zeros((*y.shape, *x.shape))
    for idx in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[idx] = h
        J[(..., *idx)] = (-f(x + 2 * d) + 8 * f(x + d) - 8 * f(x - d) + f(x - 2 * d)) / (12 * h)
    return J


def test_float64_derivatives_equal_finite_differences_of_the_served_model(client: TestClient, rng: Any) -> None:
    x = rng.normal(size=(2, 5))

    def served(v: np.ndarray) -> np.ndarray:
        return np.asarray(post(client, "wide", "predict", inputs={"x": v})["outputs"]["y"])

    full = _five_point(served, x)  # (B, 2, B, 5): examples are independent, so only b == b' is nonzero
    per_example = np.stack([full[b, :, b] for b in range(2)])
    body = post(client, "wide", "jacobian", inputs={"x": x})
    close(body["jacobian"]["y"]["x"], per_example, "float64")
    assert np.abs(full[0, :, 1]).max() < 1e-12

    def served_jacobian(v: np.ndarray) -> np.ndarray:
        return np.asarray(post(client, "wide", "jacobian", inputs={"x": v})["jacobian"]["y"]["x"])

    H = _five_point(served_jacobian, x)  # (B, 2, 5, B, 5)
    body = post(client, "wide", "hessian", inputs={"x": x})
    close(body["hessian"]["y"]["x"], np.stack([H[b, :, :, b] for b in range(2)]), "float64")


def test_a_model_whose_examples_are_not_independent_gets_the_whole_jacobian(
    client: TestClient, oracles: dict[str, Oracle], rng: Any
) -> None:
    card = client.get("/models/whole").json()
    assert card["batch"] is False
    inputs = example_inputs("whole", rng)
    body = post(client, "whole", "jacobian", inputs=inputs)
    close(body["jacobian"]["y"]["x"], oracles["whole"].full_jacobian(inputs, "x")["y"], "float64")  # (3, 2, 3, 5)
    V = rng.normal(size=(2, 3, 5))
    jvp = post(client, "whole", "jvp", inputs=inputs, tangents={"x": V})
    J = oracles["whole"].full_jacobian(inputs, "x")["y"]
    close(jvp["jvp"]["y"], np.einsum("boci,kci->kbo", J, V), "float64")
    bad = client.post(
        "/models/whole/vjp", json=_lists({"inputs": inputs, "cotangents": {"y": np.ones((3, 2))}, "sum_batch": True})
    )
    assert bad.status_code == 422 and "sum_batch" in bad.json()["message"]


def test_npz_in_and_out_equals_json(client: TestClient, rng: Any) -> None:
    inputs = example_inputs("pair", rng)
    cot = rng.normal(size=(2, 3, 3)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **{"inputs/a": inputs["a"], "inputs/b": inputs["b"], "cotangents/s": cot})
    r = client.post(
        "/models/pair/vjp?wrt=a&wrt=variables",
        content=buf.getvalue(),
        headers={"content-type": NPZ, "accept": NPZ},
    )
    assert r.status_code == 200, r.text
    got = dict(np.load(io.BytesIO(r.content)))
    assert sorted(got) == ["device", "dtype", "model", "outputs/d", "outputs/s", "version", "vjp/a", "vjp/scale"]
    assert got["vjp/a"].dtype == np.float32 and got["vjp/a"].shape == (2, 3, 3)
    body = post(client, "pair", "vjp", inputs=inputs, cotangents={"s": cot}, wrt=["a", "variables"])
    # The same numbers to float32's precision: a request's rows may run stacked with others' or in
    # pieces (app.engine.costs), which changes float32 rounding in the last bits.
    np.testing.assert_allclose(got["vjp/a"], np.asarray(body["vjp"]["a"], np.float32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["vjp/scale"], np.asarray(body["vjp"]["scale"], np.float32), rtol=1e-5, atol=1e-6)


def test_an_op_without_a_gradient_is_refused_for_its_pair_only(client: TestClient, rng: Any) -> None:
    card = client.get("/models/logm").json()
    assert card["undefined"] == {"log": {"m": "MatrixLogarithm"}}
    m = rng.normal(size=(2, 2, 2))
    r = client.post("/models/logm/jacobian", json={"inputs": {"m": m.tolist()}, "of": ["log"]})
    assert r.status_code == 422 and "MatrixLogarithm" in r.json()["message"]
    assert r.json()["code"] == "undefined_gradient"
    body = post(client, "logm", "jacobian", inputs={"m": m})  # by default, the pairs that are defined
    assert list(body["jacobian"]) == ["twice"] and set(body["outputs"]) == {"log", "twice"}
    expected = np.einsum("bij,ik,jl->bijkl", 2.0 + 2.0 * m, np.eye(2), np.eye(2))  # d(2m + m²)/dm elementwise
    close(body["jacobian"]["twice"]["m"], expected, "float64")
    forward = post(client, "logm", "predict", inputs={"m": m})
    close(forward["outputs"]["twice"], 2 * m + m * m, "float64")


def test_a_path_through_round_is_a_derivative_of_zeros(client: TestClient, rng: Any) -> None:
    x = rng.normal(size=(2, 3))
    body = post(client, "rounded", "jacobian", inputs={"x": x})
    close(body["jacobian"]["r"]["x"], np.zeros((2, 3, 3)), "float64")
    close(body["jacobian"]["both"]["x"], np.stack([np.diag(2 * row) for row in x]), "float64")


def test_a_broken_model_answers_503_with_its_reason_while_the_others_serve(client: TestClient, rng: Any) -> None:
    r = client.post("/models/broken/predict", json={"inputs": {"x": [[1.0]]}})
    assert r.status_code == 503 and "did not load" in r.json()["message"]
    assert client.get("/models/broken").json()["reason"] in r.json()["message"]
    post(client, "wide", "predict", inputs=example_inputs("wide", rng))
    r = client.post("/models/nope/predict", json={"inputs": {}})
    assert r.status_code == 404 and r.json()["code"] == "unknown_model"
    r = client.post("/models/wide/gradient", json={"inputs": {}})
    assert r.status_code == 404 and "jacobian" in r.json()["message"]


X = [[0.1, 0.2, 0.3, 0.4, 0.5]]
BAD = [
    ("wide", "predict", {"inputs": {}}, "missing x"),
    ("wide", "predict", {"inputs": {"x": X, "z": X}}, "unknown z"),
    ("wide", "predict", {"inputs": {"x": [[0.1, 0.2]]}}, "shape [1, 2]"),
    ("wide", "predict", {"inputs": {"x": [0.1, 0.2, 0.3, 0.4, 0.5]}}, "must be shaped [any, 5]"),
    ("wide", "predict", {"inputs": {"x": [[0.1, 0.2, 0.3, 0.4, 0.5], [1.0]]}}, "ragged"),
    ("wide", "predict", '{"inputs": {"x": [[1e400, 0, 0, 0, 0]]}}', "NaN or infinite"),
    ("wide", "predict", {"inputs": {"x": [["a", 0, 0, 0, 0]]}}, "must hold numbers"),
    ("wide", "predict", {"inputs": {"x": [[True, False, True, True, True]]}}, "not booleans"),
    ("actions", "predict", {"inputs": {"state": [[1, 2, 3, 4]], "action": [True]}}, "not booleans"),
    ("wide", "predict", {"inputs": {"x": []}}, "shape [0]"),
    ("wide", "jacobian", {"inputs": {"x": X}, "wrt": ["y"]}, "not an input"),
    ("wide", "jacobian", {"inputs": {"x": X}, "of": ["x"]}, "not an output"),
    ("wide", "jacobian", {"inputs": {"x": X}, "tangents": {"x": X}}, "tangents are for jvp"),
    ("wide", "vjp", {"inputs": {"x": X}}, "needs cotangents"),
    ("wide", "vjp", {"inputs": {"x": X}, "cotangents": {"y": [[1.0, 2.0, 3.0]]}}, "cotangents.y has shape"),
    ("wide", "vjp", {"inputs": {"x": X}, "cotangents": {"y": [[1.0, 2.0], [1.0, 2.0]]}}, "2 examples"),
    ("wide", "jvp", {"inputs": {"x": X}}, "needs tangents"),
    ("wide", "hessian", {"inputs": {"x": X}, "wrt": ["variables"]}, "exactly one input"),
    ("pair", "hessian", {"inputs": {"a": [[1, 2, 3]], "b": [[1, 2, 3]]}}, "exactly one input"),
    ("actions", "predict", {"inputs": {"state": [[1, 2, 3, 4]], "action": [1.5]}}, "must hold integers"),
    ("actions", "predict", {"inputs": {"state": [[1, 2, 3, 4]], "action": [7]}}, "is not in [0, 3)"),
    (
        "actions",
        "jacobian",
        {"inputs": {"state": [[1, 2, 3, 4]], "action": [1]}, "wrt": ["action"]},
        "not differentiable",
    ),
    ("actions", "predict", {"inputs": {"state": [[1, 2, 3, 4]], "action": [1, 2]}}, "batch sizes differ"),
    ("actions", "predict", {"inputs": {"state": [[1, 2, 3, 4]], "action": [2**40]}}, "range"),
    ("wide", "predict", {"inputs": {"x": X}, "extra": 1}, "extra"),
]


@pytest.mark.parametrize(("name", "op", "body", "says"), BAD)
def test_each_bad_input_is_a_422_that_says_what_is_wrong(
    client: TestClient, name: str, op: str, body: dict[str, Any] | str, says: str
) -> None:
    if isinstance(body, str):  # what a JSON encoder will not write
        r = client.post(f"/models/{name}/{op}", content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(f"/models/{name}/{op}", json=body)
    assert r.status_code == 422, r.text
    assert says in r.json()["message"], r.json()["message"]
    assert "Traceback" not in r.text


def test_a_bad_npz_member_is_a_422(client: TestClient) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{"x": np.ones((1, 5))})
    r = client.post("/models/wide/predict", content=buf.getvalue(), headers={"content-type": NPZ})
    assert r.status_code == 422 and "inputs/<name>" in r.json()["message"]
    buf = io.BytesIO()
    np.savez(buf, **{"inputs/state": np.ones((1, 4), np.float32), "inputs/action": np.ones(1, np.float32)})
    r = client.post("/models/actions/predict", content=buf.getvalue(), headers={"content-type": NPZ})
    assert r.status_code == 422 and "integers" in r.json()["message"]
    buf = io.BytesIO()
    np.savez(buf, **{"inputs/x": np.ones((0, 5))})
    r = client.post("/models/wide/predict", content=buf.getvalue(), headers={"content-type": NPZ})
    assert r.status_code == 422 and "empty" in r.json()["message"]


def test_concurrent_requests_answer_as_they_would_alone(client: TestClient, rng: Any) -> None:
    requests = [example_inputs("mlp", rng, batch=b) for b in (1, 2, 3, 1, 4, 2)]
    alone = [post(client, "mlp", "jacobian", inputs=x) for x in requests]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda x: post(client, "mlp", "jacobian", inputs=x), requests))
    for a, b in zip(alone, together, strict=True):  # float32's 1e-5: stacked rows change oneDNN's GEMM blocking
        np.testing.assert_allclose(b["jacobian"]["y"]["x"], a["jacobian"]["y"]["x"], rtol=1e-5, atol=1e-6)


def test_the_docs_page_has_each_models_routes_with_examples_that_run(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for name in ("policy_mlp", "mlp", "pair", "actions", "wide", "whole", "logm", "rounded", "open"):
        for op in ("predict", "jacobian", "vjp", "jvp", "hessian", "hvp"):
            entry = spec["paths"][f"/models/{name}/{op}"]["post"]
            content = entry["requestBody"]["content"]["application/json"]
            assert set(content["schema"]["properties"]["inputs"]["properties"]) == {
                t["name"] for t in client.get(f"/models/{name}").json()["inputs"]
            }
            if "example" not in content:  # vjp of an output whose size is open: none can be shaped ahead
                assert (name, op) in (("open", "vjp"), ("whole", "vjp"))
                continue
            r = client.post(f"/models/{name}/{op}", json=content["example"])
            assert r.status_code == 200, (name, op, r.text)
            assert set(entry["responses"]) >= {"200", "422", "413", "503"}
    assert "/models/broken/predict" not in spec["paths"]
    x = spec["paths"]["/models/wide/jacobian"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert x["properties"]["inputs"]["properties"]["x"]["items"]["maxItems"] == 5


@pytest.mark.parametrize("calibrated_on", [32, 2])
@pytest.mark.parametrize("rows", [1, 100])
@pytest.mark.parametrize("name", MODELS)
def test_the_memory_estimate_is_never_below_the_measured_peak(
    client: TestClient, name: str, rows: int, calibrated_on: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each operation's claim (app.service.budget.estimate, from the factor measured on its first
    use on 32 rows, or on 2 as a tight budget would leave it) against TensorFlow's peak measured
    now, at other sizes and with K products."""
    import dataclasses

    from app import calls
    from app.catalog import card_from_dict
    from app.engine import calibration
    from app.service import budget
    from app.service.problem import problem

    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    for op in calls.OPERATIONS:
        engine.calibrate(name, op)
    card = card_from_dict(next(c for c in engine.describe()["models"] if c["name"] == name))
    if calibrated_on != calibration.ROWS:
        monkeypatch.setattr(calibration, "ROWS", calibrated_on)
        factors = {
            op: calibration.calibrate(engine.model_calls.run, name, card, op, 2**26, 2**40) for op in calls.OPERATIONS
        }
        card = dataclasses.replace(card, peak_factors={op: f for op, f in factors.items() if f is not None})
    assert set(card.peak_factors) >= {"predict", "jacobian", "vjp", "jvp"}
    rng = np.random.default_rng(rows)
    inputs = example_inputs(name, rng, batch=rows)
    outputs = {t.name: t for t in card.outputs}
    for op in calls.OPERATIONS:
        if op not in card.peak_factors:
            continue
        call = calls.example_call(card, op)
        products: dict[str, Any] = {}
        if op == calls.VJP:
            products["cotangents"] = {o: rng.normal(size=(3, rows, *outputs[o].shape[1:])) for o in call.of}
        if op in (calls.JVP, calls.HVP):
            products["tangents"] = {w: rng.normal(size=(3, *inputs[w].shape)) for w in call.inputs_wrt()}
        p = problem(card, op, inputs, wrt=list(call.wrt) or None, of=list(call.of) or None, **products)
        claim = budget.estimate(p, npz=True)
        peak, _ = calibration.peak(engine.model_calls.run, name, p.call, p.rows)
        assert peak <= claim, (name, op, rows, peak, claim)


def test_a_request_at_the_budgets_edge_is_admitted_or_refused_as_the_estimate_says(
    client: TestClient, repo: Path, rng: Any
) -> None:
    from app.catalog import card_from_dict
    from app.service import budget
    from app.service.problem import problem

    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    card = card_from_dict(next(c for c in engine.describe()["models"] if c["name"] == "mlp"))
    # The budget: about what 256 rows claim; the edge, from the serving app's card: the most rows
    # whose claim fits, and one more. The same engine, served with that budget.
    budget = budget.estimate(problem(card, "jacobian", example_inputs("mlp", rng, 256)), True)
    settings = Settings(model_repository=str(repo), xla=False, memory_budget_bytes=budget)
    for small in started_client(settings, engine=engine):
        own = card_from_dict(client_card(small, "mlp"))

        claims = {n: _jacobian_claim(own, n) for n in range(1, 600)}
        fits = max(n for n, c in claims.items() if c <= budget)
        answers = [_post_npz(small, "/models/mlp/jacobian", example_inputs("mlp", rng, n)) for n in (fits, fits + 1, 1)]
        assert answers[0].status_code == 200, answers[0].text
        refused = answers[1]
        assert refused.status_code == 413 and refused.json()["code"] == "over_memory_budget", refused.text
        assert f"{budget:,}" in refused.json()["message"] and f"{claims[fits + 1]:,}" in refused.json()["message"]
        assert answers[2].status_code == 200  # and it still serves


def _jacobian_claim(card: Any, rows: int) -> int:
    from app.service import budget
    from app.service.problem import problem

    inputs = example_inputs("mlp", np.random.default_rng(rows), rows)
    return budget.estimate(problem(card, "jacobian", inputs), npz=True)


def client_card(client: TestClient, name: str) -> dict[str, Any]:
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    return next(c for c in engine.describe()["models"] if c["name"] == name)  # type: ignore[no-any-return]


def _post_npz(client: TestClient, path: str, inputs: dict[str, np.ndarray]) -> Any:
    buf = io.BytesIO()
    np.savez(buf, **{f"inputs/{k}": v for k, v in inputs.items()})
    return client.post(path, content=buf.getvalue(), headers={"content-type": NPZ, "accept": NPZ})


def test_an_output_size_the_signature_leaves_open_is_counted_before_the_derivative(client: TestClient) -> None:
    card = client.get("/models/open").json()
    assert card["outputs"] == [{"name": "y", "dtype": "float64", "shape": [None, None], "symbols": []}]
    x = np.array([[0.5, -1.0, 2.0]])
    body = post(client, "open", "jacobian", inputs={"x": x})
    close(body["jacobian"]["y"]["x"], np.concatenate([np.eye(3), np.diag(2 * x[0])])[None], "float64")
    wide = np.ones((1, 1500))  # J: 1·3000·1500 = 4.5 M numbers, past the JSON limit (2²²); 1500² if counted as 1
    r = client.post("/models/open/jacobian", json={"inputs": {"x": wide.tolist()}})
    assert r.status_code == 413 and "4,500,000" in r.json()["message"], r.text


def test_a_model_capturing_constants_beside_its_variable_is_served(client: TestClient, repo: Path, rng: Any) -> None:
    """`self.idx = tf.constant(...)` in a tf.Module: its signature captures tensors that are not
    variable handles. Every derivative equals a local GradientTape on the loaded SavedModel."""
    assert client.get("/models/captured").json()["state"] == "ready"
    loaded = tf.saved_model.load(str(repo / "captured" / "1"))
    f = loaded.signatures["serving_default"]
    x = tf.constant(rng.normal(size=(4, 3)))
    u = rng.normal(size=(4, 2))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = f(x=x)["y"]
        s = tf.reduce_sum(y * u)
    per_example = tape.batch_jacobian(y, x).numpy()
    (w,) = f.trainable_variables
    close(post(client, "captured", "predict", inputs={"x": x.numpy()})["outputs"]["y"], y.numpy(), "float64")
    close(post(client, "captured", "jacobian", inputs={"x": x.numpy()})["jacobian"]["y"]["x"], per_example, "float64")
    body = post(
        client, "captured", "vjp", inputs={"x": x.numpy()}, cotangents={"y": u}, wrt=["variables"], sum_batch=True
    )
    close(body["vjp"][w.name.removesuffix(":0")], tape.gradient(s, w).numpy(), "float64")


def test_v2_says_a_model_that_did_not_load_is_not_ready_and_why(client: TestClient) -> None:
    for name in ("broken", "broken.jacobian"):
        r = client.get(f"/v2/models/{name}/ready")
        assert r.status_code == 503 and r.json() == {"name": name, "ready": False}
        meta = client.get(f"/v2/models/{name}")
        assert meta.status_code == 503 and "did not load" in meta.json()["error"], meta.text
    assert client.get("/v2/models/mlp/ready").json() == {"name": "mlp", "ready": True}


@pytest.mark.parametrize("name,tensor", [("x", [[0.5] * 64]), ("cotangents/y", [[1.0] * 16])])
def test_v2_refuses_data_in_another_datatype_than_the_inputs(client: TestClient, name: str, tensor: Any) -> None:
    """As Triton does: FP64 data for an FP32 input is refused, not cast."""
    inputs = [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [[0.5] * 64]}]
    inputs = [i for i in inputs if i["name"] != name]
    inputs.append({"name": name, "datatype": "FP64", "shape": list(np.shape(tensor)), "data": tensor})
    r = client.post("/v2/models/mlp.vjp/infer", json={"inputs": inputs})
    assert r.status_code == 400, r.text
    assert f"Input {name} has datatype FP64; model 'mlp' takes it as FP32" in r.json()["error"]


def test_an_operations_first_request_runs_alone_until_it_is_measured(repo: Path) -> None:
    """Before an operation's first use has measured its peak, a request of it claims the whole
    budget (it runs alone); after, its estimate. The 413 is decided by the estimate either way."""
    import dataclasses

    from app import calls
    from app.engine.derivatives import Engine
    from app.service import budget
    from app.service.problem import problem

    engine = Engine(model_repository=str(repo))
    card = engine.repository["mlp"].card
    assert card.peak_factors == {}
    p = problem(card, calls.VJP, {"x": np.ones((4, 64))}, cotangents={"y": np.ones((4, 16))})
    estimated = budget.estimate(p, npz=True)
    assert budget.claim(p, estimated, 1 << 30) == 1 << 30
    engine.calibrate("mlp", calls.VJP)
    measured = engine.repository["mlp"].card
    assert set(measured.peak_factors) == {calls.VJP}
    p = dataclasses.replace(p, card=measured)
    assert budget.claim(p, budget.estimate(p, npz=True), 1 << 30) < 1 << 30
