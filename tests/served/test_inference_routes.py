"""The Open Inference Protocol through the real `tritonclient.http` against a live server: every
endpoint, every model with binary data on and off both ways, FP32 and FP64, one state and a batch,
answers equal to the native endpoints'; bad requests raise the client's exception with our message."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from jacobian_client import Client
from tritonclient.utils import InferenceServerException

from tests.support.helpers import operation_inputs
from tests.support.servers import LiveServer

MODELS = ("jacobian", "hessian", "hvp", "vjp", "jvp")
OUTPUTS = {"jacobian": ("W", "J"), "hessian": ("W", "H"), "hvp": ("W", "HV"), "vjp": ("W", "UJ"), "jvp": ("W", "JV")}
EXTRA = {"hvp": "V", "vjp": "U", "jvp": "V"}
TOL = {"FP64": 1e-12, "FP32": 1e-6}


@pytest.fixture
def tc(live_server: LiveServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        live_server.url.removeprefix("http://"), connection_timeout=60, network_timeout=60
    )


def _native(url: str, model: str, arrays: dict[str, np.ndarray], **options: Any) -> dict[str, Any]:
    """The native endpoint's answer, through the Python client (npz both ways)."""
    with Client(url) as client:
        result = getattr(client, model)(**arrays, **options)
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if getattr(result, f.name) is not None}


def _infer(
    tc: triton.InferenceServerClient,
    model: str,
    arrays: dict[str, np.ndarray],
    binary_in: bool,
    binary_out: bool | None,
    outputs: tuple[str, ...] | None = None,
    **kwargs: Any,
) -> Any:
    datatype = "FP64" if next(iter(arrays.values())).dtype == np.float64 else "FP32"
    inputs = []
    for name, a in arrays.items():
        t = triton.InferInput(name, list(a.shape), datatype)
        t.set_data_from_numpy(a, binary_data=binary_in)
        inputs.append(t)
    wanted = (
        None
        if binary_out is None
        else [triton.InferRequestedOutput(n, binary_data=binary_out) for n in outputs or OUTPUTS[model]]
    )
    return tc.infer(model, inputs, outputs=wanted, **kwargs)


def test_server_and_model_endpoints(tc: triton.InferenceServerClient) -> None:
    assert tc.is_server_live() and tc.is_server_ready()
    meta = tc.get_server_metadata()
    assert meta["name"] == "jacobian-service" and "binary_tensor_data" in meta["extensions"]
    for model in MODELS:
        assert tc.is_model_ready(model) and tc.is_model_ready(model, "1")
        for version in ("", "1"):
            m = tc.get_model_metadata(model, version)
            assert m["name"] == model and m["versions"] == ["1"]
            assert [t["name"] for t in m["inputs"]] == ["X", "Y", *([EXTRA[model]] if model in EXTRA else [])]
            assert set(OUTPUTS[model]) <= {t["name"] for t in m["outputs"]}
            assert all(d == -1 for t in m["inputs"] + m["outputs"] for d in t["shape"])
    assert not tc.is_model_ready("nope")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("dtype", ["FP64", "FP32"])
@pytest.mark.parametrize("batch", [False, True], ids=["one state", "batch"])
def test_infer_equals_the_native_endpoint(
    tc: triton.InferenceServerClient,
    live_server: LiveServer,
    rng: np.random.Generator,
    model: str,
    dtype: str,
    batch: bool,
) -> None:
    arrays = operation_inputs(model, batch, "float64" if dtype == "FP64" else "float32", rng)
    native = _native(live_server.url, model, arrays)
    for binary_in, binary_out in itertools.product((True, False), (True, False, None)):
        result = _infer(tc, model, arrays, binary_in, binary_out, request_id=f"r-{binary_in}-{binary_out}")
        assert result.get_response()["id"] == f"r-{binary_in}-{binary_out}"
        assert result.get_response()["parameters"]["dtype"] == str(native["dtype"])
        for name in OUTPUTS[model]:
            got = result.as_numpy(name)
            assert got is not None and got.shape == native[name].shape, (name, binary_in, binary_out)
            assert got.dtype == native[name].dtype
            np.testing.assert_allclose(got, native[name], rtol=TOL[dtype], atol=TOL[dtype], err_msg=name)


def test_outputs_choose_what_is_computed(
    tc: triton.InferenceServerClient, live_server: LiveServer, rng: np.random.Generator
) -> None:
    arrays = operation_inputs("jacobian", True, "float64", rng)
    native = _native(live_server.url, "jacobian", arrays, wrt=("Y",))
    result = _infer(tc, "jacobian", arrays, True, True, outputs=("J_Y",))
    assert {o["name"] for o in result.get_response()["outputs"]} == {"J_Y"}
    assert result.as_numpy("J") is None and "J" not in native
    np.testing.assert_allclose(result.as_numpy("J_Y"), native["J_Y"], rtol=1e-12, atol=1e-12)
    both = _infer(tc, "jacobian", arrays, False, False, outputs=("W", "J", "J_Y"))
    native_both = _native(live_server.url, "jacobian", arrays, wrt=("X", "Y"))
    for name in ("W", "J", "J_Y"):
        np.testing.assert_allclose(both.as_numpy(name), native_both[name], rtol=1e-12, atol=1e-12)


def test_sum_states_is_a_request_parameter(
    tc: triton.InferenceServerClient, live_server: LiveServer, rng: np.random.Generator
) -> None:
    arrays = operation_inputs("vjp", True, "float64", rng)
    native = _native(live_server.url, "vjp", arrays, sum_states=True)
    result = _infer(tc, "vjp", arrays, True, True, parameters={"sum_states": True})
    np.testing.assert_allclose(result.as_numpy("UJ"), native["UJ"], rtol=1e-12, atol=1e-12)
    assert result.as_numpy("UJ").shape == arrays["X"].shape


def _raises(call: Any, status: str, *words: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call()
    err = caught.value
    assert err.status() == status, (err.status(), err.message())
    for word in words:
        assert word in err.message(), err.message()


def test_bad_requests_raise_the_clients_exception_with_our_message(
    tc: triton.InferenceServerClient, rng: np.random.Generator
) -> None:
    good = operation_inputs("jacobian", False, "float64", rng)

    def with_inputs(inputs: list[triton.InferInput], model: str = "jacobian") -> Any:
        return lambda: tc.infer(model, inputs)

    def tensor(name: str, a: np.ndarray, datatype: str, binary: bool = True) -> triton.InferInput:
        t = triton.InferInput(name, list(a.shape), datatype)
        t.set_data_from_numpy(a, binary_data=binary)
        return t

    X, Y = good["X"], good["Y"]
    # Wrong datatype: integers, and inputs that disagree.
    _raises(
        with_inputs([tensor("X", X.astype(np.int32), "INT32"), tensor("Y", Y, "FP64")]), "400", "INT32", "FP32 or FP64"
    )
    _raises(
        with_inputs([tensor("X", X, "FP64"), tensor("Y", Y.astype(np.float32), "FP32")]), "400", "one datatype", "FP32"
    )
    # Wrong shape: Y does not match X's columns (JSON and binary).
    for binary in (True, False):
        bad_y = tensor("Y", np.ones(X.shape[1] + 1), "FP64", binary)
        _raises(with_inputs([tensor("X", X, "FP64", binary), bad_y]), "400", "Y", "columns")
    # Missing input, unknown model, unknown version, unknown output.
    _raises(with_inputs([tensor("X", X, "FP64")]), "400", "missing: Y")
    _raises(with_inputs([tensor("X", X, "FP64"), tensor("Y", Y, "FP64")], "softmax"), "404", "Unknown model")
    _raises(
        lambda: tc.infer("jacobian", [tensor("X", X, "FP64"), tensor("Y", Y, "FP64")], model_version="2"),
        "404",
        "version",
    )
    _raises(
        lambda: tc.infer(
            "jacobian", [tensor("X", X, "FP64"), tensor("Y", Y, "FP64")], outputs=[triton.InferRequestedOutput("H")]
        ),
        "400",
        "no output H",
    )
    _raises(lambda: tc.get_model_metadata("softmax"), "404", "Unknown model")
    # Non-finite values, and a vjp cotangent of the wrong shape.
    _raises(with_inputs([tensor("X", np.full_like(X, np.nan), "FP64"), tensor("Y", Y, "FP64")]), "400", "NaN")
    U = np.ones(X.shape[0] + 1)
    _raises(with_inputs([tensor("X", X, "FP64"), tensor("Y", Y, "FP64"), tensor("U", U, "FP64")], "vjp"), "400", "U")


def test_a_big_binary_answer_equals_the_native_one(
    tc: triton.InferenceServerClient, live_server: LiveServer, rng: np.random.Generator
) -> None:
    """8 MiB of J: over the socket's inline limit, so it comes from the engine's shared memory."""
    arrays = {"X": rng.normal(size=(64, 512)).astype(np.float32), "Y": (rng.normal(size=512) / 20).astype(np.float32)}
    native = _native(live_server.url, "jacobian", arrays)
    result = _infer(tc, "jacobian", arrays, True, True)
    # The two requests may take different engine paths (graph, XLA-compiled): equal to float32 rounding.
    np.testing.assert_allclose(result.as_numpy("J"), native["J"], rtol=1e-6, atol=1e-7)
    assert result.as_numpy("J").nbytes == 64 * 64 * 512 * 4
