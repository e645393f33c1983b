"""The Open Inference Protocol (KServe V2 REST, as Triton, KServe, MLServer and OpenVINO Model
Server speak it) in this service's terms, with Triton's binary tensor data extension both ways.
No web imports: `app.http.v2.rest` serves it.

Models are the original endpoints (`models`), fronts to the built-in model: inputs and outputs
are named as in the native API, the inputs' datatype (FP32 or FP64) is the computation's dtype,
and the request's `outputs` choose what is computed (asking for J_Y is how a Jacobian in Y is
asked for). A request becomes the same request a native one does (`app.service.seed`), so it
meets the same checks, limits, memory budget and batching; only the envelope differs. The
repository's models, and the built-in model by its own name (`policy`, `policy.jacobian`), speak
it through `app.http.v2.model_inference`.

Binary data: a request whose JSON part is followed by tensor bytes says so with the
`Inference-Header-Content-Length` header, and each such input with `binary_data_size`. Inputs are
read in place from the body (no copy); outputs asked for as binary are sent from the answer's
own memory (for a big answer, the engine's shared-memory segment), as the npz path does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from app.calls import VJP
from app.endpoints import ENDPOINTS, Endpoint
from app.errors import InvalidInput, MalformedBody, UnknownModel
from app.http.v2.documents import InferenceRequest, ModelMetadata, Parameters, RequestInput, TensorMetadata
from app.service import codec, npz
from app.service.dataplane import Served
from app.service.seed import PolicyRequest, from_named

VERSION = "1"  # each model has one version
EXTENSIONS = ["binary_tensor_data"]
DATATYPES = {"FP32": "float32", "FP64": "float64"}
V2_DATATYPE = {dtype: name for name, dtype in DATATYPES.items()}  # float32 -> FP32
PLATFORM = "tensorflow_autodiff"


# ---- models


@dataclass(frozen=True)
class EndpointModel:
    """A V2 model: one of the original endpoints (`app.endpoints`), named as it (`jacobian`)."""

    name: str
    endpoint: Endpoint

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.endpoint.members

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.endpoint.outputs

    def metadata(self, datatype: str) -> ModelMetadata:
        e = self.endpoint

        def tensors(names: tuple[str, ...], rank: Callable[[str], int]) -> list[TensorMetadata]:
            return [TensorMetadata(name=n, datatype=datatype, shape=[-1] * rank(n)) for n in names]

        return ModelMetadata(
            name=self.name,
            versions=[VERSION],
            platform=PLATFORM,
            inputs=tensors(e.members, e.input_rank),
            outputs=tensors(e.outputs, e.output_rank),
        )


def models() -> dict[str, EndpointModel]:
    """Every original endpoint, by its V2 name."""
    return {name: EndpointModel(name, e) for name, e in ENDPOINTS.items()}


def model(name: str, version: str | None = None) -> EndpointModel:
    """The V2 model `name` (`jacobian`): this runs on every inference request."""
    e = ENDPOINTS.get(name)
    if e is None:
        raise UnknownModel(f"Unknown model {name!r}; the models are {', '.join(models())}")
    if version is not None and version != VERSION:
        raise UnknownModel(f"Model {name!r} has no version {version!r}; its only version is {VERSION!r}")
    return EndpointModel(name, e)


# ---- requests


@dataclass(frozen=True)
class Inference:
    """A parsed request: the problem, and the outputs to send (name -> as binary)."""

    model: EndpointModel
    problem: PolicyRequest
    outputs: dict[str, bool]
    id: str | None

    @property
    def all_binary(self) -> bool:
        """Every output goes as binary data: the limits for binary answers apply."""
        return all(self.outputs.values())

    @property
    def any_binary(self) -> bool:
        """Some output goes as binary data: the response is JSON followed by bytes."""
        return any(self.outputs.values())


def parse(m: EndpointModel, body: bytes, header_length: str | None) -> Inference:
    """The request body (JSON, then binary tensor data if `header_length` is given) as an Inference."""
    request, binary = read_request(body, header_length)
    arrays, dtype = _inputs(request.inputs, binary)
    missing = [n for n in m.inputs if n not in arrays]
    unknown = [n for n in arrays if n not in m.inputs]
    if missing or unknown:
        raise InvalidInput(
            f"Model {m.name!r} takes inputs {', '.join(m.inputs)}; "
            f"missing: {', '.join(missing) or 'none'}, unexpected: {', '.join(unknown) or 'none'}"
        )
    outputs = _outputs(m, request)
    # W alone still needs a Jacobian call: the one in Y is the smallest (A·F, not A²·F).
    wrt = [w for name, w in (("J", "X"), ("J_Y", "Y")) if name in outputs] or ["Y"]
    products = m.endpoint.products
    sum_states = flag(request.parameters, "sum_states") if products == VJP else False
    problem = from_named(arrays, dtype, products, sum_states, wrt)
    return Inference(m, problem, outputs, request.id)


def read_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, memoryview]:
    """The request's JSON part as an InferenceRequest (400 if it is not one), and its binary data."""
    head, binary = split_body(body, header_length)
    try:
        return InferenceRequest.model_validate_json(head), binary
    except ValidationError as err:
        details = codec.validation_details(err)
        summary = "; ".join(f"{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in details[:5])
        raise MalformedBody(f"The inference request is not valid: {summary}", details) from None


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    if not header_length.isdigit() or int(header_length) > len(body):
        raise MalformedBody(
            f"Inference-Header-Content-Length is {header_length!r} but the body has {len(body):,} bytes; "
            "it must be the byte length of the JSON part"
        )
    view = memoryview(body)
    return bytes(view[: int(header_length)]), view[int(header_length) :]


def _inputs(inputs: list[RequestInput], binary: memoryview) -> tuple[dict[str, np.ndarray], str]:
    arrays = read_inputs(inputs, binary)
    datatypes = {t.name: t.datatype for t in inputs}
    return arrays, DATATYPES[next(iter(datatypes.values()), "FP32")]


def read_inputs(
    inputs: list[RequestInput], binary: memoryview, datatypes: dict[str, str] = DATATYPES, one_datatype: bool = True
) -> dict[str, np.ndarray]:
    """The inputs as arrays, from JSON data or binary tensor data read in place. The built-in
    models take FP32 or FP64, one for all; a repository model its signature's, each its own."""
    arrays: dict[str, np.ndarray] = {}
    given: dict[str, str] = {}
    offset = 0
    for t in inputs:
        if t.name in arrays:
            raise InvalidInput(f"Input {t.name} is given twice")
        if t.datatype not in datatypes:
            takes = "computes in FP32 or FP64" if datatypes is DATATYPES else f"takes {', '.join(datatypes)}"
            raise InvalidInput(f"Input {t.name} has datatype {t.datatype}; this service {takes}")
        dtype = np.dtype(datatypes[t.datatype]).newbyteorder("<")
        count = math.prod(t.shape)
        size = t.parameters.get("binary_data_size")
        if size is not None:
            need = count * dtype.itemsize
            if isinstance(size, bool) or not isinstance(size, int) or size != need:
                raise InvalidInput(
                    f"Input {t.name}: binary_data_size is {size!r} but shape {t.shape} of {t.datatype} "
                    f"takes {need:,} bytes"
                )
            if offset + size > len(binary):
                raise MalformedBody(f"The body ends before input {t.name}'s {size:,} bytes of binary data")
            arrays[t.name] = np.frombuffer(binary, dtype, count, offset).reshape(t.shape)
            offset += size
        elif t.data is None:
            raise InvalidInput(f"Input {t.name} has neither data nor binary_data_size")
        else:
            arrays[t.name] = _json_tensor(t, count, floating=dtype.kind == "f")
        given[t.name] = t.datatype
    if offset != len(binary):
        raise MalformedBody(
            f"The body has {len(binary) - offset:,} bytes after the inputs' binary data; "
            "each binary input must give its binary_data_size"
        )
    if one_datatype and len(set(given.values())) > 1:
        listed = ", ".join(f"{n}: {d}" for n, d in given.items())
        raise InvalidInput(f"All inputs must have one datatype, FP32 or FP64; got {listed}")
    return arrays


def _json_tensor(t: RequestInput, count: int, floating: bool = True) -> np.ndarray:
    """JSON data as float64 for a floating input; as given (integers, or what the check refuses) otherwise."""
    try:
        flat = np.asarray(t.data, dtype=np.float64 if floating else None).reshape(-1)
        if flat.dtype.kind not in "iuf":
            raise TypeError
    except (ValueError, TypeError):
        raise InvalidInput(f"Input {t.name}'s data must be numbers, flat or nested evenly") from None
    if flat.size != count:
        raise InvalidInput(f"Input {t.name}'s data has {flat.size:,} numbers but its shape {t.shape} holds {count:,}")
    return flat.reshape(t.shape)


def _outputs(m: EndpointModel, request: InferenceRequest) -> dict[str, bool]:
    """Requested outputs -> whether each goes as binary data, in the model's order."""
    every = flag(request.parameters, "binary_data_output")
    if request.outputs is None:
        return {name: every for name in m.endpoint.defaults}
    asked = {o.name: flag(o.parameters, "binary_data", every) for o in request.outputs}
    unknown = [n for n in asked if n not in m.outputs]
    if unknown:
        raise InvalidInput(
            f"Model {m.name!r} has no output {', '.join(unknown)}; its outputs are {', '.join(m.outputs)}"
        )
    if not asked:
        raise InvalidInput(f"The request asks for no outputs; model {m.name!r} has {', '.join(m.outputs)}")
    return {name: asked[name] for name in m.outputs if name in asked}


def flag(parameters: Parameters, name: str, default: bool = False) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"Parameter {name} must be true or false, not {value!r}")
    return value


# ---- responses


def encode(inference: Inference, answer: Served) -> npz.Body:
    """The response to an original endpoint's model: the outputs asked for, in its datatype."""
    dtype = answer.meta["dtype"]
    chosen = [(n, answer.arrays[n], V2_DATATYPE[dtype], binary) for n, binary in inference.outputs.items()]
    return response(inference.model.name, VERSION, inference.id, answer.meta, chosen)


def response(
    name: str, version: str, request_id: str | None, meta: dict[str, Any], tensors: list[tuple[str, Any, str, bool]]
) -> npz.Body:
    """A response: its JSON part first (the body's `parts[0]`), then each binary output's bytes,
    sent from the arrays' own memory. `tensors`: (name, array, datatype, as binary data)."""
    outputs, binary = [], []
    for tensor_name, a, datatype, as_binary in tensors:
        out: dict[str, Any] = {"name": tensor_name, "datatype": datatype, "shape": list(a.shape)}
        if as_binary:
            out["parameters"] = {"binary_data_size": a.nbytes}
            binary += [memoryview(b).cast("B") for b in npz.contiguous_blocks(a)]
        else:
            out["data"] = np.ascontiguousarray(a).reshape(-1)
        outputs.append(out)
    doc = {
        "model_name": name,
        "model_version": version,
        **({"id": request_id} if request_id is not None else {}),
        "parameters": {"dtype": meta["dtype"], "device": meta["device"]},
        "outputs": outputs,
    }
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return npz.Body([head, *binary], len(head) + sum(b.nbytes for b in binary))
