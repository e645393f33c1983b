"""POST /models/{name}/{operation}: every derivative of every model, the built-in one's and the
repository's, JSON or npz in and out. The request is read here, checked against the model's card
(`app.service.problem`) and served by the one pipeline (`app.service.dataplane`); the models' own
routes and schemas on the docs page come from the same cards (`app.http.model_docs`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app import calls
from app.catalog import variables_fixed
from app.errors import InvalidInput, UnknownModel, UnsupportedMediaType
from app.http import runtime
from app.http.auth import check_api_key
from app.http.hangup import unless_disconnected
from app.http.reading import PUSH_LIMIT, media_type, query_dtype, query_flag, read_body, wants_npz
from app.http.responses import respond
from app.http.routes import PlainRoute
from app.http.schemas import ModelRequest, VariablesPush
from app.service import codec, npz
from app.service.dataplane import nested
from app.service.outputs import Encoding
from app.service.problem import problem
from app.service.variables import read_variables

router = APIRouter(route_class=PlainRoute)
MEMBER_SEP = "/"  # npz members: inputs/x, cotangents/y; answers: outputs/y, jacobian/y/x


async def model_operation(request: Request) -> Response:
    name, operation = request.path_params["name"], request.path_params["operation"]
    version = _version(request.path_params.get("version"))
    service = runtime.service(request)
    settings = service.settings
    check_api_key(request, settings)
    card = await runtime.card(request, name)
    if operation not in calls.OPERATIONS:
        raise UnknownModel(f"Model {name!r} has no operation {operation!r}; it has {', '.join(calls.OPERATIONS)}")
    media = media_type(request)
    if media not in (codec.JSON, codec.NPZ):
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'!r} is not supported; send {codec.JSON} or {codec.NPZ}"
        )
    body = await read_body(request, settings.max_request_bytes)
    fields = _npz_fields(request, body, settings.max_request_bytes) if media == codec.NPZ else _json_fields(body)
    p = problem(card, operation, **fields, default_dtype=settings.default_dtype, version=version)
    as_npz = wants_npz(request.headers.get("accept"))
    s = settings
    out = Encoding.chosen(as_npz, s.max_output_elements, s.max_json_output_elements, f"Accept: {codec.NPZ}")
    answer = await unless_disconnected(request, service.serve(p, out))
    if as_npz:
        members = {k.replace(calls.SEP, MEMBER_SEP): a for k, a in answer.arrays.items()}
        return await respond(answer, lambda: npz.write(members, answer.meta), codec.NPZ)
    tree = nested({k: np.ascontiguousarray(a) for k, a in answer.arrays.items()})
    return await respond(answer, lambda: _json(tree, answer.meta), codec.JSON)


def _json(tree: dict[str, Any], meta: dict[str, Any]) -> bytes:
    return orjson.dumps({**tree, **meta}, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_fields(body: bytes) -> dict[str, Any]:
    return codec.validated(body, ModelRequest, '"inputs"').model_dump()


def _version(given: str | None) -> int | None:
    """A version in the path (`/models/{name}/versions/{version}/...`): a positive integer."""
    if given is None:
        return None
    if not given.isdigit() or int(given) == 0:
        raise UnknownModel(f"Version {given!r} is not a version number; GET /models/{{name}} lists its versions")
    return int(given)


GROUPS = ("inputs", "cotangents", "tangents", "variables")


def _groups(body: bytes, limit: int, groups: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """An npz body's members `<group>/<name>`, by group."""
    found: dict[str, dict[str, Any]] = {g: {} for g in groups}
    for member, a in npz.read(body, None, limit).items():
        group, _, name = member.partition(MEMBER_SEP)
        if group not in found or not name:
            expected = ", ".join(f"{g}/<name>" for g in groups)
            raise InvalidInput(f"npz member {member!r} is not one of {expected}")
        found[group][name] = a
    return found


def _npz_fields(request: Request, body: bytes, limit: int) -> dict[str, Any]:
    """Members `inputs/<name>`, `cotangents/<output>`, `tangents/<input>`, `variables/<name>`;
    wrt, of and sum_batch in the query (`?wrt=x&wrt=variables&of=y&sum_batch=true`)."""
    groups = _groups(body, limit, GROUPS)
    query = request.query_params
    return {
        "inputs": groups["inputs"],
        "cotangents": groups["cotangents"] or None,
        "tangents": groups["tangents"] or None,
        "variables": groups["variables"] or None,
        "wrt": _listed(query.getlist("wrt")),
        "of": _listed(query.getlist("of")),
        "sum_batch": query_flag(request, "sum_batch"),
        "dtype": query_dtype(request),
    }


def _listed(values: list[str]) -> list[str] | None:
    """?wrt=a&wrt=b or ?wrt=a,b."""
    names = [n for v in values for n in v.split(",") if n]
    return names or None


async def push_variables(request: Request) -> Response:
    """PUT /models/{name}/variables: a new version of the model with these values, in every engine."""
    name = request.path_params["name"]
    settings = runtime.service(request).settings
    check_api_key(request, settings)
    card = await runtime.card(request, name)
    media = media_type(request)
    if media not in (codec.JSON, codec.NPZ):
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'!r} is not supported; send {codec.JSON} or {codec.NPZ}"
        )
    body = await read_body(request, settings.max_push_bytes, PUSH_LIMIT)
    if media == codec.NPZ:
        given = _groups(body, settings.max_push_bytes, ("variables",))["variables"]
    else:
        given = codec.validated(body, VariablesPush, '"variables"').variables
    if not given:
        raise InvalidInput(
            f"The push gives no variables; model {name!r} has {', '.join(v.name for v in card.variables)}"
        )
    version, _card = await runtime.engines(request).push(name, read_variables(card, given))
    return Response(orjson.dumps({"model": name, "version": version}), media_type=codec.JSON)


async def get_variables(request: Request) -> Response:
    """GET /models/{name}/variables (or /models/{name}/versions/{v}/variables): a version's values
    of the model's trainable variables, the newest by default: where a training loop starts."""
    name, version = request.path_params["name"], _version(request.path_params.get("version"))
    check_api_key(request, runtime.service(request).settings)
    card = await runtime.card(request, name)
    fixed = variables_fixed(card)
    if fixed:
        raise InvalidInput(fixed)
    number, values = await runtime.engines(request).values(name, version or 0)
    meta = {"model": name, "version": number}
    if wants_npz(request.headers.get("accept")):
        members = {f"variables{MEMBER_SEP}{k}": a for k, a in values.items()}
        body = npz.write(members, {k: str(v) for k, v in meta.items()})
        return Response(b"".join(bytes(p) for p in body.parts), media_type=codec.NPZ)
    lists = {
        k: a.tolist() for k, a in values.items()
    }  # a 0-d variable too (a number), which orjson's NumPy does not take
    return Response(_json({"variables": lists}, meta), media_type=codec.JSON)


router.add_api_route("/models/{name}/variables", push_variables, methods=["PUT"], include_in_schema=False)
router.add_api_route("/models/{name}/variables", get_variables, methods=["GET"], include_in_schema=False)
router.add_api_route(
    "/models/{name}/versions/{version}/variables", get_variables, methods=["GET"], include_in_schema=False
)
router.add_api_route("/models/{name}/{operation}", model_operation, methods=["POST"], include_in_schema=False)
router.add_api_route(
    "/models/{name}/versions/{version}/{operation}", model_operation, methods=["POST"], include_in_schema=False
)
