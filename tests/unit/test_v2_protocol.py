"""app/http/v2/protocol.py: V2 requests become the native API's problems, and answers become V2
responses, binary tensor data both ways; every malformed request is refused with its reason."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from app.errors import InvalidInput, MalformedBody
from app.http.v2 import protocol as oip
from app.service.dataplane import Served
from tests.support.v2 import X, Y, tensor, v2_body


def _parse(request: dict[str, Any], *binary: np.ndarray, model: str = "jacobian") -> oip.Inference:
    return oip.parse(oip.model(model), *v2_body(request, *binary))


def test_json_and_binary_inputs_give_the_same_problem() -> None:
    json_in = _parse({"inputs": [tensor("X", X), tensor("Y", Y)]})
    binary_in = _parse({"inputs": [tensor("X", X, binary=True), tensor("Y", Y, binary=True)]}, X, Y)
    for p in (json_in.problem, binary_in.problem):
        np.testing.assert_array_equal(p.X, X)
        np.testing.assert_array_equal(p.Y, Y[None])
        assert p.dtype == "float64" and not p.batched
    assert json_in.outputs == {"W": False, "J": False}  # the model's defaults, as JSON


def test_binary_inputs_are_read_in_place() -> None:
    body, length = v2_body({"inputs": [tensor("X", X, binary=True), tensor("Y", Y, binary=True)]}, X, Y)
    p = oip.parse(oip.model("jacobian"), body, length).problem
    assert np.shares_memory(p.X, np.frombuffer(body, np.uint8))


def test_fp32_inputs_compute_in_float32() -> None:
    p = _parse({"inputs": [tensor("X", X.astype(np.float32), "FP32"), tensor("Y", Y.astype(np.float32), "FP32")]})
    assert p.problem.dtype == "float32"


def test_outputs_and_binary_flags() -> None:
    inputs = [tensor("X", X), tensor("Y", Y)]
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
        ({"inputs": [tensor("X", X)]}, (), InvalidInput, "missing: Y"),
        ({"inputs": [tensor("X", X), tensor("Y", Y), tensor("Z", Y)]}, (), InvalidInput, "unexpected: Z"),
        ({"inputs": [tensor("X", X), tensor("X", X)]}, (), InvalidInput, "twice"),
        ({"inputs": [tensor("X", X, "INT64"), tensor("Y", Y)]}, (), InvalidInput, "INT64"),
        ({"inputs": [tensor("X", X), tensor("Y", Y, "FP32")]}, (), InvalidInput, "one datatype"),
        ({"inputs": [{**tensor("X", X), "shape": [3, 4]}, tensor("Y", Y)]}, (), InvalidInput, "holds 12"),
        (
            {"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP64"}, tensor("Y", Y)]},
            (),
            InvalidInput,
            "neither",
        ),
        ({"inputs": [{**tensor("X", X), "data": [[1, 2], [3]]}, tensor("Y", Y)]}, (), InvalidInput, "numbers"),
        ({"inputs": [{**tensor("X", X), "data": ["a"] * 8}, tensor("Y", Y)]}, (), InvalidInput, "numbers"),
        ({"inputs": [tensor("X", X), tensor("Y", Y)], "outputs": [{"name": "H"}]}, (), InvalidInput, "no output H"),
        ({"inputs": [tensor("X", X), tensor("Y", Y)], "outputs": []}, (), InvalidInput, "no outputs"),
        (
            {"inputs": [tensor("X", X), tensor("Y", Y)], "parameters": {"binary_data_output": 1}},
            (),
            InvalidInput,
            "true or false",
        ),
        ({"inputs": "X"}, (), MalformedBody, "inputs"),
        ({"inputs": [{**tensor("X", X), "shape": [-2, 4]}, tensor("Y", Y)]}, (), MalformedBody, "shape"),
        # Binary data that does not add up.
        (
            {"inputs": [{**tensor("X", X, binary=True), "parameters": {"binary_data_size": 8}}, tensor("Y", Y)]},
            (X,),
            InvalidInput,
            "takes 64",
        ),
        ({"inputs": [tensor("X", X, binary=True), tensor("Y", Y)]}, (X, Y), MalformedBody, "after the inputs"),
        (
            {"inputs": [tensor("X", X, binary=True), tensor("Y", Y, binary=True)]},
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
    body, _ = v2_body({"inputs": [tensor("X", X), tensor("Y", Y)]})
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
            "inputs": [tensor("X", X), tensor("Y", Y)],
            "outputs": [{"name": "W"}, {"name": "J", "parameters": {"binary_data": True}}],
        }
    )
    W, J = np.array([-1.0, -0.5]), np.arange(16.0).reshape(2, 2, 4)
    body = oip.encode(inference, Served({"W": W, "J": J}, {"dtype": "float64", "device": "/device:CPU:0"}, print))
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
        {"inputs": [tensor("X", X), tensor("Y", Y)], "parameters": {"binary_data_output": True}}, model="hessian"
    )
    H_lse = np.arange(2 * 4 * 2 * 4, dtype=np.float64).reshape(2, 4, 2, 4)
    H = np.broadcast_to(H_lse, (2, 2, 4, 2, 4))
    body = oip.encode(inference, Served({"W": np.zeros(2), "H": H}, {"dtype": "float64", "device": "cpu"}, print))
    data = b"".join(bytes(p) for p in body.parts[2:])
    np.testing.assert_array_equal(np.frombuffer(data, np.float64).reshape(H.shape), H)


# ---- the routes, in process: the protocol's error shape and status codes
