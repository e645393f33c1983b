"""The Open OperationInference Protocol for the repository's models (`app.catalog.Card`), no web imports.

Naming: `<model>` is the model's forward pass, with its signature's real inputs and outputs;
`<model>.jacobian`, `.vjp`, `.jvp`, `.hessian` and `.hvp` are its derivatives. Inputs are the
signature's, in its datatypes, plus `cotangents/<output>` (vjp) or `tangents/<input>` (jvp, hvp);
the request's parameters `wrt` and `of` (comma-separated names) and `sum_batch` choose as the
native API's fields do; outputs are the signature's and the derivatives, named as the native
npz answer's members (`jacobian/<output>/<input>`). Optional inputs `variables/<name>` give its
trainable variables values for this request. Without a version, the newest computes; with one
(`/v2/models/<name>/versions/<v>/infer`), that one. A request becomes the same `Problem` a native
one does (`app.service.problem`): same checks, limits, batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app import calls
from app.catalog import VARIABLES, Card, variables_fixed
from app.errors import InvalidInput, UnknownModel
from app.http.v2 import protocol as oip
from app.http.v2.documents import ModelMetadata, TensorMetadata
from app.service import npz
from app.service.dataplane import Served
from app.service.problem import Problem, problem, ready

DATATYPES = {
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
}
V2_DATATYPE = {v: k for k, v in DATATYPES.items()}
GROUPS = ("cotangents", "tangents", "variables")
SEP = "/"


@dataclass(frozen=True)
class ModelOperation:
    name: str  # its V2 name: <model> or <model>.<operation>
    card: Card
    op: str
    asked: int | None = None  # the version the request names (the engine knows which it keeps)


def find(name: str, cards: list[Card], version: str | None) -> ModelOperation:
    owner, _, op = name.rpartition(".")
    if op not in calls.OPERATIONS or op == calls.PREDICT:
        owner, op = name, calls.PREDICT
    for card in cards:
        if card.name == owner:
            if version is not None and not (version.isdigit() and int(version) > 0):
                kept = ", ".join(map(str, card.versions))
                raise UnknownModel(f"Model {name!r} has no version {version!r}; its versions are {kept}")
            return ModelOperation(name, card, op, int(version) if version is not None else None)
    raise UnknownModel(f"Unknown model {name!r}; GET /models lists the models, GET /v2/models/<name> each one")


def _dims(shape: tuple[int | None, ...]) -> list[int]:
    return [-1 if d is None else d for d in shape]


def metadata(m: ModelOperation) -> ModelMetadata:
    """The signature's inputs and outputs, and a derivative model's products and derivatives
    (for its default wrt and of). A model that did not load has none: `ModelUnavailable`, with why."""
    card = ready(m.card)
    inputs = [TensorMetadata(name=t.name, datatype=V2_DATATYPE[t.dtype], shape=_dims(t.shape)) for t in card.inputs]
    outputs = [TensorMetadata(name=t.name, datatype=V2_DATATYPE[t.dtype], shape=_dims(t.shape)) for t in card.outputs]
    if m.op != calls.PREDICT:
        inputs += _product_inputs(m)
        outputs += _derivative_outputs(m)
    if not variables_fixed(card):
        inputs += [
            TensorMetadata(
                name=f"variables{SEP}{v.name}", datatype=V2_DATATYPE[v.dtype], shape=_dims(v.shape), optional=True
            )
            for v in card.variables
        ]
    versions = [str(v) for v in card.versions]
    return ModelMetadata(name=m.name, versions=versions, platform=oip.PLATFORM, inputs=inputs, outputs=outputs)


def _product_inputs(m: ModelOperation) -> list[TensorMetadata]:
    if m.op == calls.VJP:
        tensors, group = [t for t in m.card.outputs if t.floating], "cotangents"
    elif m.op in (calls.JVP, calls.HVP):
        tensors, group = [t for t in m.card.inputs if t.floating], "tangents"
    else:
        return []
    return [TensorMetadata(name=f"{group}/{t.name}", datatype=V2_DATATYPE[t.dtype], shape=[-1]) for t in tensors]


def _derivative_outputs(m: ModelOperation) -> list[TensorMetadata]:
    try:
        call = calls.default_call(m.card, m.op)
    except InvalidInput:  # no default (a Hessian of a model with two inputs): named per request
        return []
    wrt = list(call.inputs_wrt()) + ([v.name for v in m.card.variables] if VARIABLES in call.wrt else [])
    names = {
        calls.JACOBIAN: [f"jacobian/{o}/{w}" for o in call.of for w in wrt],
        calls.VJP: [f"vjp/{w}" for w in wrt],
        calls.JVP: [f"jvp/{o}" for o in call.of],
        calls.HESSIAN: [f"hessian/{o}/{w}" for o in call.of for w in wrt],
        calls.HVP: [f"hvp/{o}/{w}" for o in call.of for w in wrt],
    }[m.op]
    dtypes = {t.name: t.dtype for t in m.card.inputs + m.card.variables}
    return [TensorMetadata(name=n, datatype=V2_DATATYPE[dtypes[n.rsplit(SEP, 1)[-1]]], shape=[-1]) for n in names]


@dataclass(frozen=True)
class OperationInference:
    model: ModelOperation
    problem: Problem
    outputs: dict[str, bool] | None  # name -> as binary; None: every output, `binary` says how
    binary: bool
    id: str | None

    @property
    def all_binary(self) -> bool:
        return self.binary if self.outputs is None else all(self.outputs.values())

    @property
    def any_binary(self) -> bool:
        return self.binary if self.outputs is None else any(self.outputs.values())


def _check_datatypes(card: Card, inputs: list[Any]) -> None:
    """Each tensor in its own datatype, as Triton asks (FP64 data for an FP32 input is refused,
    not cast); a name the model does not have is the problem's to refuse."""
    tensors = {t.name: t for t in card.inputs}
    tensors |= {f"cotangents{SEP}{t.name}": t for t in card.outputs}
    tensors |= {f"tangents{SEP}{t.name}": t for t in card.inputs}
    tensors |= {f"variables{SEP}{t.name}": t for t in card.variables}
    for given in inputs:
        t = tensors.get(given.name)
        if t is not None and t.floating and DATATYPES.get(given.datatype) in card.dtypes:
            continue  # a model that computes in several dtypes: the inputs' says which
        if t is not None and given.datatype != V2_DATATYPE.get(t.dtype):
            raise InvalidInput(
                f"Input {given.name} has datatype {given.datatype}; model {card.name!r} takes it as "
                f"{V2_DATATYPE.get(t.dtype, t.dtype)}"
            )


def parse(m: ModelOperation, body: bytes, header_length: str | None) -> OperationInference:
    request, binary = oip.read_request(body, header_length)
    _check_datatypes(m.card, request.inputs)
    arrays = oip.read_inputs(request.inputs, binary, DATATYPES, one_datatype=False)
    groups: dict[str, dict[str, np.ndarray]] = {"inputs": {}, **{g: {} for g in GROUPS}}
    for name, a in arrays.items():
        group, _, rest = name.partition(SEP)
        if group in GROUPS and rest:
            groups[group][rest] = a
        else:
            groups["inputs"][name] = a
    params = request.parameters
    every = oip.flag(params, "binary_data_output")
    p = problem(
        m.card,
        m.op,
        groups["inputs"],
        wrt=_names(params, "wrt"),
        of=_names(params, "of"),
        cotangents=groups["cotangents"] or None,
        tangents=groups["tangents"] or None,
        sum_batch=oip.flag(params, "sum_batch"),
        dtype=_computed_in(m.card, arrays),
        variables=groups["variables"] or None,
        version=m.asked,
    )
    outputs = None
    if request.outputs is not None:
        if not request.outputs:
            raise InvalidInput(f"The request asks for no outputs; model {m.name!r} has some (GET its metadata)")
        outputs = {o.name: oip.flag(o.parameters, "binary_data", every) for o in request.outputs}
    return OperationInference(m, p, outputs, every, request.id)


def _computed_in(card: Card, arrays: dict[str, np.ndarray]) -> str | None:
    """For a model that computes in several dtypes, its floating inputs' (the widest)."""
    floating = [a.dtype for a in arrays.values() if a.dtype.kind == "f"]
    return str(np.result_type(*floating)) if card.dtypes and floating else None


def _names(params: dict[str, Any], key: str) -> list[str] | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"Parameter {key} must be a string of comma-separated names, not {value!r}")
    return [n for n in value.split(",") if n]


def encode(inference: OperationInference, answer: Served) -> npz.Body:
    """The answer: outputs named as the signature's (`outputs|y` -> `y`) and the derivatives as
    npz members (`jacobian|y|x` -> `jacobian/y/x`), each in its own datatype."""
    named = {_v2_name(k): a for k, a in answer.arrays.items()}
    asked = inference.outputs
    if asked is not None:
        unknown = [n for n in asked if n not in named]
        if unknown:
            raise InvalidInput(
                f"Model {inference.model.name!r} has no output {', '.join(unknown)} for this request; "
                f"it computed {', '.join(named)}"
            )
    chosen = asked if asked is not None else {n: inference.binary for n in named}
    tensors = [(n, named[n], V2_DATATYPE[named[n].dtype.name], binary) for n, binary in chosen.items()]
    version = str(answer.meta["version"])  # the one it ran on
    return oip.response(inference.model.name, version, inference.id, answer.meta, tensors)


def _v2_name(key: str) -> str:
    kind, _, rest = key.partition(calls.SEP)
    return rest if kind == "outputs" else key.replace(calls.SEP, SEP)
