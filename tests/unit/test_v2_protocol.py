"""app/http/v2/protocol.py: V2 requests become the native API's problems, and answers become V2
responses, binary tensor data both ways; every malformed request is refused with its reason."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from app.errors import InvalidInput, MalformedBody
from app.http.v2 import protocol as oip

X = np.arange(8.0).reshape(2, 4) / 10
Y = np.array([1.0, 2.0, 3.0, 4.0])


def _tensor(name: str, a: np.ndarray, datatype: str = "FP64", binary: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"name": name, "shape": list(a.shape), "datatype": datatype}
    if binary:
        t["parameters"] = {"binary_data_size": a.nbytes}
    else:
        t["data"] = a.tolist()
    return t


def _body(request: dict[str, Any], *binary: np.ndarray) -> tuple[bytes, str | None]:
    head = orjson.dumps(request)
    if not binary:
        return head, None
    return head + b"".join(a.astype(a.dtype.newbyteorder("<")).tobytes() for a in binary), str(len(head))


def _parse(request: dict[str, Any], *binary: np.ndarray, model: str = "jacobian") -> oip.Inference:
    return oip.parse(oip.model(model), *_body(request, *binary))


def test_json_and_binary_inputs_give_the_same_problem() -> None:
    json_in = _parse({"inputs": [_tensor("X", X), _tensor("Y", Y)]})
    binary_in = _parse({"inputs": [_tensor("X", X, binary=True), _tensor("Y", Y, binary=True)]}, X, Y)
    for p in (json_in.problem, binary_in.problem):
        np.testing.assert_array_equal(p.X, X)
        np.testing.assert_array_equal(p.Y, Y[None])
        assert p.dtype == "float64" and not p.batched
    assert json_in.outputs == {"W": False, "J": False}  # the model's defaults, as JSON


def test_binary_inputs_are_read_in_place() -> None:
    body, length = _body({"inputs": [_tensor("X", X, binary=True), _tensor("Y", Y, binary=True)]}, X, Y)
    p = oip.parse(oip.model("jacobian"), body, length).problem
    assert np.shares_memory(p.X, np.frombuffer(body, np.uint8))


def test_fp32_inputs_compute_in_float32() -> None:
    p = _parse({"inputs": [_tensor("X", X.astype(np.float32), "FP32"), _tensor("Y", Y.astype(np.float32), "FP32")]})
    assert p.problem.dtype == "float32"


def test_outputs_and_binary_flags() -> None:
    inputs = [_tensor("X", X), _tensor("Y", Y)]
    asked = _parse({"inputs": inputs, "outputs": [{"name": "J_Y", "parameters": {"binary_data": True}}, {"name": "W"}]})
    assert asked.outputs == {"W": False, "J_Y": True} and asked.problem.wrt == ("Y",)
    every = _parse({"inputs": inputs, "parameters": {"binary_data_output": True}})
    assert every.outputs == {"W": True, "J": True} and every.all_binary
    both = _parse({"inputs": inputs, "outputs": [{"name": "J"}, {"name": "J_Y"}]})
    assert both.problem.wrt == ("X", "Y")
    w_only = _parse({"inputs": inputs, "outputs": [{"name": "W"}]})
    assert w_only.problem.wrt == ("Y",)  # the cheapest Jacobian, whose size limits a W-only request least


@pytest.mark.parametrize(
    "request_doc,binary,error,words",
    [
        ({"inputs": [_tensor("X", X)]}, (), InvalidInput, "missing: Y"),
        ({"inputs": [_tensor("X", X), _tensor("Y", Y), _tensor("Z", Y)]}, (), InvalidInput, "unexpected: Z"),
        ({"inputs": [_tensor("X", X), _tensor("X", X)]}, (), InvalidInput, "twice"),
        ({"inputs": [_tensor("X", X, "INT64"), _tensor("Y", Y)]}, (), InvalidInput, "INT64"),
        ({"inputs": [_tensor("X", X), _tensor("Y", Y, "FP32")]}, (), InvalidInput, "one datatype"),
        ({"inputs": [{**_tensor("X", X), "shape": [3, 4]}, _tensor("Y", Y)]}, (), InvalidInput, "holds 12"),
        (
            {"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP64"}, _tensor("Y", Y)]},
            (),
            InvalidInput,
            "neither",
        ),
        ({"inputs": [{**_tensor("X", X), "data": [[1, 2], [3]]}, _tensor("Y", Y)]}, (), InvalidInput, "numbers"),
        ({"inputs": [{**_tensor("X", X), "data": ["a"] * 8}, _tensor("Y", Y)]}, (), InvalidInput, "numbers"),
        ({"inputs": [_tensor("X", X), _tensor("Y", Y)], "outputs": [{"name": "H"}]}, (), InvalidInput, "no output H"),
        ({"inputs": [_tensor("X", X), _tensor("Y", Y)], "outputs": []}, (), InvalidInput, "no outputs"),
        (
            {"inputs": [_tensor("X", X), _tensor("Y", Y)], "parameters": {"binary_data_output": 1}},
            (),
            InvalidInput,
            "true or false",
        ),
        ({"inputs": "X"}, (), MalformedBody, "inputs"),
        ({"inputs": [{**_tensor("X", X), "shape": [-2, 4]}, _tensor("Y", Y)]}, (), MalformedBody, "shape"),
        # Binary data that does not add up.
        (
            {"inputs": [{**_tensor("X", X, binary=True), "parameters": {"binary_data_size": 8}}, _tensor("Y", Y)]},
            (X,),
            InvalidInput,
            "takes 64",
        ),
        ({"inputs": [_tensor("X", X, binary=True), _tensor("Y", Y)]}, (X, Y), MalformedBody, "after the inputs"),
        (
            {"inputs": [_tensor("X", X, binary=True), _tensor("Y", Y, binary=True)]},
            (X,),
            MalformedBody,
            "ends before input Y",
        ),
    ],
)
def test_malformed_requests_are_refused_with_their_reason(
    request_doc: dict[str, Any], binary: tuple[np.ndarray, ...], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        _parse(request_doc, *binary)


def test_a_header_length_past_the_body_is_malformed() -> None:
    body, _ = _body({"inputs": [_tensor("X", X), _tensor("Y", Y)]})
    for length in (str(len(body) + 1), "ten", "-1"):
        with pytest.raises(MalformedBody, match="Inference-Header-Content-Length"):
            oip.parse(oip.model("jacobian"), body, length)


def test_unknown_models_and_versions() -> None:
    with pytest.raises(oip.UnknownModel, match="the models are jacobian, hessian, hvp, vjp, jvp"):
        oip.model("softmax")
    with pytest.raises(oip.UnknownModel, match="only version is '1'"):
        oip.model("jacobian", "2")
    assert oip.model("jvp", "1").name == "jvp"


def test_encode_puts_binary_outputs_after_the_json_part_without_copies() -> None:
    inference = _parse(
        {
            "inputs": [_tensor("X", X), _tensor("Y", Y)],
            "outputs": [{"name": "W"}, {"name": "J", "parameters": {"binary_data": True}}],
        }
    )
    W, J = np.array([-1.0, -0.5]), np.arange(16.0).reshape(2, 2, 4)
    body = oip.encode(inference, {"W": W, "J": J}, "float64", "/device:CPU:0")
    head = orjson.loads(bytes(body.parts[0]))
    assert head["model_name"] == "jacobian" and head["model_version"] == "1"
    assert head["parameters"] == {"dtype": "float64", "device": "/device:CPU:0"}
    w, j = head["outputs"]
    assert w == {"name": "W", "datatype": "FP64", "shape": [2], "data": [-1.0, -0.5]}
    assert j == {"name": "J", "datatype": "FP64", "shape": [2, 2, 4], "parameters": {"binary_data_size": J.nbytes}}
    assert np.shares_memory(np.frombuffer(body.parts[1], np.uint8), J)
    assert body.size == len(body.parts[0]) + J.nbytes


def test_a_broadcast_hessian_is_sent_block_by_block() -> None:
    inference = _parse(
        {"inputs": [_tensor("X", X), _tensor("Y", Y)], "parameters": {"binary_data_output": True}}, model="hessian"
    )
    H_lse = np.arange(2 * 4 * 2 * 4, dtype=np.float64).reshape(2, 4, 2, 4)
    H = np.broadcast_to(H_lse, (2, 2, 4, 2, 4))
    body = oip.encode(inference, {"W": np.zeros(2), "H": H}, "float64", "cpu")
    data = b"".join(bytes(p) for p in body.parts[2:])
    np.testing.assert_array_equal(np.frombuffer(data, np.float64).reshape(H.shape), H)


# ---- the routes, in process: the protocol's error shape and status codes
