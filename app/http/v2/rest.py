"""The Open Inference Protocol's REST routes (`/v2/...`), over the same service as the native ones:
the translation is `app.http.v2.protocol`; errors take the protocol's shape in `app.http.handlers`."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.endpoints import BUILTIN
from app.http import runtime
from app.http.auth import check_api_key
from app.http.hangup import unless_disconnected
from app.http.openapi import OPTIONAL_KEY, inline_schema
from app.http.reading import read_body
from app.http.responses import respond
from app.http.routes import PlainRoute
from app.http.v2 import documents as docs
from app.http.v2 import model_inference as repo
from app.http.v2 import protocol as oip
from app.service import codec, front
from app.service.outputs import Encoding

PREFIX = "/v2"
TAG = "Open Inference Protocol (KServe V2)"
BINARY = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"

router = APIRouter(prefix=PREFIX, tags=[TAG])  # the server's routes; the models' are built by `routers`


def _error(description: str) -> dict[str, Any]:
    return {"model": docs.InferenceErrorBody, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Not a valid inference request, or not a valid problem: inputs, shapes, datatypes, values."),
    401: _error("An API key is configured and the request did not present it."),
    404: _error("Unknown model or version."),
    405: _error("Method not allowed on this path."),
    413: _error("The body, or the output it would produce, exceeds a configured limit or the memory budget."),
    503: _error("Not ready yet, or at capacity (see Retry-After)."),
    504: _error("The computation exceeded the per-request deadline."),
}


def _model_parameter() -> dict[str, Any]:
    names = list(oip.models())
    return {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}


_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string", "enum": [oip.VERSION]}}


async def _model_from(request: Request) -> oip.EndpointModel | repo.ModelOperation:
    """An original endpoint (`jacobian`), else a model's (`<model>`, `<model>.<operation>`)."""
    params = request.path_params
    name, version = params["model_name"], params.get("version")
    if name in oip.models():
        return oip.model(name, version)
    return repo.find(name, list((await runtime.models(request)).values()), version)


@router.get(
    "",
    summary="Server metadata",
    description="The server's name, version and protocol extensions (binary_tensor_data).",
    response_model=docs.ServerMetadata,
    responses={404: ERRORS[404], 405: ERRORS[405]},
)
async def server_metadata(request: Request) -> docs.ServerMetadata:
    return docs.ServerMetadata(name="jacobian-service", version=request.app.version, extensions=oip.EXTENSIONS)


async def _ready(request: Request) -> bool:
    state = runtime.runtime(request)
    if state.engines is None:
        return False
    await state.engines.first_contact()
    return bool(state.engines.readiness()["status"] == "ready")


@router.get(
    "/health/live",
    summary="Server live",
    description="200 while the process runs.",
    responses={404: ERRORS[404], 405: ERRORS[405]},
)
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    summary="Server ready",
    description="200 once every model can compute; 503 before (TensorFlow loading, an engine restarting).",
    responses={404: ERRORS[404], 405: ERRORS[405], 503: {"description": "Not ready."}},
)
async def ready(request: Request) -> Response:
    ok = await _ready(request)
    return Response(b'{"ready":true}' if ok else b'{"ready":false}', 200 if ok else 503, media_type=codec.JSON)


async def _model_ready(request: Request) -> Response:
    m = await _model_from(request)
    loaded = not isinstance(m, repo.ModelOperation) or m.card.state == "ready"
    ok = await _ready(request) and loaded
    return Response(orjson.dumps({"name": m.name, "ready": ok}), 200 if ok else 503, media_type=codec.JSON)


async def _metadata(request: Request) -> docs.ModelMetadata:
    m = await _model_from(request)
    if isinstance(m, repo.ModelOperation):
        return repo.metadata(m)
    default = runtime.runtime(request).settings.default_dtype
    return m.metadata(oip.V2_DATATYPE[default])


_READY_DOC: dict[str, Any] = {
    "summary": "Model ready",
    "description": "200 when the model (an operation) can compute; 503 before.",
    "responses": {404: ERRORS[404], 405: ERRORS[405], 503: {"description": "Not ready."}},
}
_METADATA_DOC: dict[str, Any] = {
    "summary": "Model metadata",
    "description": "The model's inputs and outputs: names as in the native API, shapes with -1 for each "
    "dimension that varies (Y may also be one state, F; U and V may drop their K axis). The datatype shown "
    "is the default; FP32 and FP64 are both served.",
    "response_model": docs.ModelMetadata,
    "response_model_exclude_none": True,
    "responses": {404: ERRORS[404], 405: ERRORS[405]},
}


async def infer(request: Request) -> Response:
    """Read, compute through the same service as the native routes, answer in the protocol's form."""
    m = await _model_from(request)
    service = runtime.service(request)
    s = service.settings
    check_api_key(request, s)
    body = await read_body(request, s.max_request_bytes)
    header = request.headers.get(HEADER_LENGTH)
    inference = repo.parse(m, body, header) if isinstance(m, repo.ModelOperation) else oip.parse(m, body, header)
    how = '"binary_data": true on each output, or "binary_data_output": true'
    out = Encoding.chosen(inference.all_binary, s.max_output_elements, s.max_json_output_elements, how, "binary data")
    if isinstance(inference, repo.OperationInference):
        computing = service.serve(inference.problem, out)
    else:  # an original endpoint's: a front to the built-in model
        computing = front.serve(
            service, await runtime.card(request, BUILTIN), inference.model.endpoint, inference.problem, out
        )
    answer = await unless_disconnected(request, computing)
    binary = inference.any_binary
    encode = repo.encode if isinstance(inference, repo.OperationInference) else oip.encode
    response = await respond(answer, lambda: encode(inference, answer), BINARY if binary else codec.JSON)  # type: ignore[arg-type]
    if binary:
        response.headers[HEADER_LENGTH] = str(len(response.parts[0]))
    return response


_INFER_BODY = {
    "security": OPTIONAL_KEY,
    "requestBody": {
        "required": True,
        "content": {
            codec.JSON: {
                "schema": inline_schema(docs.InferenceRequest),
                "example": {
                    "id": "seed",
                    "inputs": [
                        {"name": "X", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 8]},
                        {"name": "Y", "shape": [4], "datatype": "FP64", "data": [0.1, 0.2, 0.3, 0.4]},
                    ],
                    "outputs": [{"name": "W"}, {"name": "J"}],
                },
            },
            BINARY: {
                "schema": {"type": "string", "format": "binary"},
                "description": "The JSON request (Inference-Header-Content-Length bytes), then each binary "
                "input's little-endian row-major bytes, in order (binary tensor data extension).",
            },
        },
    },
}
_INFER_DOC: dict[str, Any] = {
    "summary": "Infer: the model's outputs for these inputs",
    "description": "Inputs X, Y (and V for hvp and jvp, U for vjp) as FP32 or FP64, as JSON data or binary "
    "tensor data. `outputs` chooses what is computed (J_Y asks for the Jacobian in Y); `binary_data` per output "
    'or `"binary_data_output": true` returns raw bytes after the JSON part. vjp takes `"sum_states": true` '
    "as a request parameter. The same limits, memory budget, API key and batching as the native endpoints.",
    "response_model": docs.InferenceResponse,
    "responses": {
        **ERRORS,
        200: {
            "content": {
                BINARY: {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "With binary outputs: the JSON response (Inference-Header-Content-Length "
                    "bytes), then each binary output's bytes.",
                }
            }
        },
    },
}


def routers() -> list[APIRouter]:
    """The server's routes, then the models' (metadata, readiness, infer) for every registered model."""
    models = APIRouter(prefix=PREFIX, tags=[TAG])
    infer_router = APIRouter(prefix=PREFIX, tags=[TAG], route_class=PlainRoute)
    model = _model_parameter()
    for base, params in (
        ("/models/{model_name}", [model]),
        ("/models/{model_name}/versions/{version}", [model, _VERSION]),
    ):
        extra = {"parameters": params}
        models.add_api_route(base, _metadata, methods=["GET"], openapi_extra=extra, **_METADATA_DOC)
        models.add_api_route(base + "/ready", _model_ready, methods=["GET"], openapi_extra=extra, **_READY_DOC)
        infer_extra = {**_INFER_BODY, "parameters": params}
        infer_router.add_api_route(base + "/infer", infer, methods=["POST"], openapi_extra=infer_extra, **_INFER_DOC)
    return [infer_router, router, models]
