"""GET /models and POST /models/{name}/{operation} under `python -m app`: the engine process loads
the repository and the HTTP workers list its cards (carried in the engine's status), broken models
with their reasons; its operations through the engine process."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np

from tests.support import servers

NPZ = "application/x-npz"


def test_the_engine_processes_models_are_listed_by_the_workers(
    repository_server: tuple[servers.LiveServer, Path],
) -> None:
    server, root = repository_server
    for _ in range(4):  # whichever worker answers
        listed = httpx.get(server.url + "/models", timeout=30).json()["models"]
        states = {m["name"]: m["state"] for m in listed}
        assert states == {
            "policy": "ready",
            "actions": "ready",
            "broken": "failed",
            "mlp": "ready",
            "pair": "ready",
            "policy_mlp": "ready",
            "wide": "ready",
            "scalar": "ready",
        }
    mlp = httpx.get(server.url + "/models/mlp", timeout=30).json()
    assert mlp["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 64], "symbols": []}]
    assert [v["shape"] for v in mlp["variables"]] == [[64, 256], [256], [256, 256], [256], [256, 16], [16]]
    assert httpx.get(server.url + "/models/broken", timeout=30).json()["reason"]
    _operations_through_the_engine_process(server.url, root)
    _the_client(server.url, root)
    _through_tritonclient(server.url, root)


def _operations_through_the_engine_process(url: str, root: Path) -> None:
    """The IPC path: a call as the operation's name, a big answer in shared memory, a model's
    refusal as a 422, concurrent requests stacked, values as the JAX oracle says."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.model_oracles import Oracle

    rng = np.random.default_rng(5)
    x = rng.normal(size=(256, 64)).astype(np.float32)  # J: 256·16·64 float32 = 1 MB, past the inline limit
    buf = io.BytesIO()
    np.savez(buf, **{"inputs/x": x})
    r = httpx.post(
        url + "/models/mlp/jacobian", content=buf.getvalue(), headers={"content-type": NPZ, "accept": NPZ}, timeout=120
    )
    assert r.status_code == 200, r.text
    J = np.load(io.BytesIO(r.content))["jacobian/y/x"]
    expected = Oracle("mlp", root / "mlp" / "1").jacobian({"x": x[:8]}, "x")["y"]
    np.testing.assert_allclose(J[:8], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    refused = httpx.post(
        url + "/models/actions/predict", json={"inputs": {"state": [[1, 2, 3, 4]], "action": [9]}}, timeout=30
    )
    assert refused.status_code == 422 and "is not in [0, 3)" in refused.json()["message"], refused.text
    pair = Oracle("pair", root / "pair" / "1")
    bodies = [
        {"a": rng.normal(size=(b, 3)).astype(np.float32), "b": rng.normal(size=(b, 3)).astype(np.float32)}
        for b in (1, 2, 3, 4, 1, 2, 5, 1)
    ]

    def jacobian(inputs: dict[str, np.ndarray]) -> dict[str, object]:
        body = {"inputs": {k: v.tolist() for k, v in inputs.items()}, "wrt": ["a"]}
        answer = httpx.post(url + "/models/pair/jacobian", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(jacobian, bodies))
    for inputs, answer in zip(bodies, answers, strict=True):
        for out, expected in pair.jacobian(inputs, "a").items():
            np.testing.assert_allclose(answer["jacobian"][out]["a"], expected, rtol=1e-5, atol=1e-5)  # type: ignore[index]


def _the_client(url: str, root: Path) -> None:
    """`client.model(name)`: every operation, npz and JSON, NumPy in and out, as the oracle says."""
    from jacobian_client import Client, JacobianServiceError

    from tests.support.model_oracles import Oracle

    rng = np.random.default_rng(6)
    oracle = Oracle("wide", root / "wide" / "1")
    x = rng.normal(size=(3, 5))
    J = oracle.jacobian({"x": x}, "x")["y"]
    H = oracle.hessian({"x": x}, "x")["y"]
    for transport in ("npz", "json"):
        with Client(url, transport=transport) as client:
            wide = client.model("wide")
            assert wide.card()["inputs"] == [{"name": "x", "dtype": "float64", "shape": [None, 5], "symbols": []}]
            r = wide.predict({"x": x})
            assert (r.model, r.version, r.dtype) == ("wide", 1, "float64") and r.device.startswith("/device:")
            np.testing.assert_allclose(r.outputs["y"], oracle.outputs({"x": x})["y"], rtol=1e-9)
            np.testing.assert_allclose(wide.jacobian({"x": x}).jacobian["y"]["x"], J, rtol=1e-9)  # type: ignore[index]
            variables = wide.jacobian({"x": x}, wrt=["variables"]).jacobian["y"]  # type: ignore[index]
            assert set(variables) == {"dense/w0", "dense/b0", "dense/w1", "dense/b1"}
            u = rng.normal(size=(2, 3, 2))
            vjp = wide.vjp({"x": x}, {"y": u}).vjp["x"]  # type: ignore[index]
            np.testing.assert_allclose(vjp, np.einsum("kbo,boi->kbi", u, J), rtol=1e-9)
            summed = wide.vjp({"x": x}, {"y": u[0]}, wrt=["variables"], sum_batch=True).vjp
            assert summed is not None and summed["dense/b1"].shape == (2,)
            np.testing.assert_allclose(summed["dense/b1"], u[0].sum(axis=0), rtol=1e-9)  # y = h·w1 + b1
            v = rng.normal(size=(3, 5))
            np.testing.assert_allclose(
                wide.jvp({"x": x}, {"x": v}).jvp["y"],
                np.einsum("boi,bi->bo", J, v),
                rtol=1e-9,  # type: ignore[index]
            )
            np.testing.assert_allclose(wide.hessian({"x": x}).hessian["y"]["x"], H, rtol=1e-9)  # type: ignore[index]
            hvp = wide.hvp({"x": x}, {"x": v}).hvp["y"]["x"]  # type: ignore[index]
            np.testing.assert_allclose(hvp, np.einsum("boij,bj->boi", H, v), rtol=1e-9, atol=1e-12)
            try:
                client.model("actions").predict({"state": np.ones((1, 4)), "action": np.array([1.5])})
            except JacobianServiceError as err:
                assert err.status == 422 and "integers" in err.message
            else:
                raise AssertionError("a float action was accepted")


def _through_tritonclient(url: str, root: Path) -> None:
    """The Open Inference Protocol with `tritonclient`, unmodified: `<model>` is the forward pass
    with its real metadata, `<model>.<operation>` each derivative; binary tensors both ways."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    from tests.support.model_oracles import Oracle

    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_model_ready("actions") and not client.is_model_ready("broken")
    meta = client.get_model_metadata("actions")
    assert meta["versions"] == ["1"]
    # Its trainable variables are optional inputs (the version's values unless given).
    assert meta["inputs"][:2] == [
        {"name": "action", "datatype": "INT32", "shape": [-1]},
        {"name": "state", "datatype": "FP32", "shape": [-1, 4]},
    ]
    assert meta["inputs"][2:] == [
        {"name": "variables/dense/w0", "datatype": "FP32", "shape": [4, 16], "optional": True},
        {"name": "variables/dense/b0", "datatype": "FP32", "shape": [16], "optional": True},
        {"name": "variables/dense/w1", "datatype": "FP32", "shape": [16, 3], "optional": True},
        {"name": "variables/dense/b1", "datatype": "FP32", "shape": [3], "optional": True},
    ]
    assert meta["outputs"] == [{"name": "log_prob", "datatype": "FP32", "shape": [-1]}]
    rng = np.random.default_rng(7)
    state = rng.normal(size=(3, 4)).astype(np.float32)
    action = np.array([0, 2, 1], np.int32)
    oracle = Oracle("actions", root / "actions" / "1")

    def tensor(name: str, value: np.ndarray, datatype: str) -> triton.InferInput:
        t = triton.InferInput(name, list(value.shape), datatype)
        t.set_data_from_numpy(value, binary_data=True)
        return t

    inputs = [tensor("state", state, "FP32"), tensor("action", action, "INT32")]
    result = client.infer("actions", inputs, outputs=[triton.InferRequestedOutput("log_prob", binary_data=True)])
    expected = oracle.outputs({"state": state, "action": action})["log_prob"]
    np.testing.assert_allclose(result.as_numpy("log_prob"), expected, rtol=1e-5)
    assert result.get_response()["model_version"] == "1"
    jac = client.infer("actions.jacobian", inputs)  # every output, as JSON data
    J = oracle.jacobian({"state": state, "action": action}, "state")["log_prob"]
    np.testing.assert_allclose(jac.as_numpy("jacobian/log_prob/state"), J, rtol=1e-5, atol=1e-6)
    vjp_inputs = [t["name"] for t in client.get_model_metadata("actions.vjp")["inputs"]]
    assert vjp_inputs[:3] == ["action", "state", "cotangents/log_prob"]
    cot = rng.normal(size=3).astype(np.float32)
    vjp = client.infer(
        "actions.vjp",
        [*inputs, tensor("cotangents/log_prob", cot, "FP32")],
        outputs=[triton.InferRequestedOutput("vjp/dense/b1", binary_data=True)],
        parameters={"wrt": "variables", "sum_batch": True},
    )
    grads = oracle.vjp_variables({"state": state, "action": action}, {"log_prob": cot})
    np.testing.assert_allclose(vjp.as_numpy("vjp/dense/b1"), grads["dense/b1"], rtol=1e-5, atol=1e-6)
    try:
        client.infer("actions", [tensor("state", state, "FP32"), tensor("action", action + 5, "INT32")])
    except InferenceServerException as err:
        assert "is not in [0, 3)" in str(err)
    else:
        raise AssertionError("an action out of range was served")
