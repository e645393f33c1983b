"""UM-Bridge (protocol 1.0) under /umbridge, for every model served: `GET /umbridge/Info`, and
`POST /umbridge/{InputSizes,OutputSizes,ModelInfo,Evaluate,Gradient,ApplyJacobian,ApplyHessian}`,
each read here and computed by the one pipeline (`app.service.umbridge`, `app.service.dataplane`);
errors in UM-Bridge's shape (`app.http.handlers`)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.errors import InvalidInput, MalformedBody
from app.http import runtime
from app.http import umbridge_docs as docs
from app.http.auth import check_api_key
from app.http.hangup import unless_disconnected
from app.http.reading import read_body
from app.http.routes import PlainRoute
from app.service import codec
from app.service import umbridge as um
from app.service.outputs import Encoding

PREFIX = "/umbridge"
OPERATIONS = ("Evaluate", "Gradient", "ApplyJacobian", "ApplyHessian")
router = APIRouter(prefix=PREFIX, route_class=PlainRoute)


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type=codec.JSON)


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, runtime.service(request).settings.max_request_bytes)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise MalformedBody(f"The request body is not valid JSON: {err}") from None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise InvalidInput('The request must be a JSON object naming the model ("name")')
    return body


async def info(request: Request) -> Response:
    models = await runtime.models(request)
    ready = [name for name, card in models.items() if card.state == "ready"]
    return _json({"protocolVersion": um.PROTOCOL_VERSION, "models": ready})


async def sizes(request: Request) -> Response:
    body = await _body(request)
    s = um.shapes(await runtime.card(request, body["name"]), body.get("config"))
    if request.url.path.endswith("InputSizes"):
        return _json({"inputSizes": s.input_sizes})
    return _json({"outputSizes": s.output_sizes})


async def model_info(request: Request) -> Response:
    body = await _body(request)
    card = await runtime.card(request, body["name"])
    differentiable = card.state == "ready" and bool(card.differentiable)
    support = {op: op == "Evaluate" or differentiable for op in OPERATIONS}
    return _json({"support": {op: card.state == "ready" and ok for op, ok in support.items()}})


async def operation(request: Request) -> Response:
    op = request.url.path.rsplit("/", 1)[-1]
    service = runtime.service(request)
    check_api_key(request, service.settings)
    body = await _body(request)
    r = um.request(await runtime.card(request, body["name"]), op, body)
    s = service.settings
    out = Encoding(False, min(s.max_json_output_elements, s.max_output_elements), "", "JSON")
    answer = await unless_disconnected(request, service.serve(r.problem, out))
    try:
        return _json({"output": um.answer(r, answer.arrays)})
    finally:
        answer.release()


_SIZES = docs.body(docs.UMBridgeNamed)


def _route(path: str, endpoint: Any, answer: type[Any], extra: dict[str, Any] | None = None) -> None:
    summary, description = docs.DOCS[path]
    router.add_api_route(
        f"/{path}",
        endpoint,
        methods=["POST"] if extra else ["GET"],
        summary=summary,
        description=description,
        response_model=answer,
        responses=docs.ERRORS,
        tags=["UM-Bridge"],
        openapi_extra=extra,
    )


_route("Info", info, docs.UMBridgeInfo)
_route("InputSizes", sizes, docs.UMBridgeInputSizes, _SIZES)
_route("OutputSizes", sizes, docs.UMBridgeOutputSizes, _SIZES)
_route("ModelInfo", model_info, docs.UMBridgeModelInfo, docs.body(docs.UMBridgeModel))
for _op in OPERATIONS:
    _route(_op, operation, docs.UMBridgeOutput, docs.body(docs.BODIES[_op], secured=True))
