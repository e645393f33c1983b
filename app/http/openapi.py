"""The OpenAPI document: the fragments the routes declare (error responses, request bodies, the
npz answer), the security schemes, and `python -m app.http.openapi`, which prints the spec the app
serves (committed as openapi/openapi.json)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.http.reading import WRT_CHOICES
from app.http.schemas import ErrorBody
from app.service import codec
from app.service.arrays import FLOAT_DTYPES

AUTH_DOC = (
    "Only when the server sets JACOBIAN_API_KEY: then the compute endpoints (/jacobian, /hessian, /hvp, "
    "/vjp, /jvp) need the key, "
    "as a bearer token or an X-API-Key header (401 without it). Health, metrics and docs stay open."
)


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


COMPUTE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Malformed body: not JSON / not an npz archive, empty, or nested too deeply."),
    401: _error("An API key is configured and the request did not present it."),
    404: _error("Unknown path."),
    405: _error("Method not allowed on this path."),
    413: _error("Request body or the output it would produce exceeds a configured limit."),
    415: _error("Content-Type is neither application/json nor application/x-npz."),
    422: _error("Valid JSON that is not a valid problem: shapes, types, non-finite values or results."),
    503: _error("Not ready yet (warming up) or at capacity (see Retry-After)."),
    504: _error("The computation exceeded the per-request deadline."),
}

DTYPE_PARAMETER = {
    "name": "dtype",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": list(FLOAT_DTYPES)},
    "description": "Computation dtype. For npz bodies (default: the arrays' widest dtype); "
    "a JSON body's own dtype field takes precedence.",
}


SUM_STATES_PARAMETER = {
    "name": "sum_states",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "For npz bodies: sum the products over the states (batch only). A JSON body says it itself.",
}


WRT_PARAMETER = {
    "name": "wrt",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": list(WRT_CHOICES), "default": "X"},
    "description": "For npz bodies: the Jacobian in X (J), in Y (J_Y) or both. A JSON body says it itself.",
}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its nested models written in place: an operation's own schema
    cannot refer to pydantic's `$defs`."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]


# Optional ({}): the key is only required when JACOBIAN_API_KEY is set.
OPTIONAL_KEY: list[dict[str, list[str]]] = [{}, {"bearer": []}, {"apiKey": []}]


def request_body(
    model: type[BaseModel], npz_members: str, extra_parameters: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "security": OPTIONAL_KEY,
        "parameters": [DTYPE_PARAMETER, *(extra_parameters or [])],
        "requestBody": {
            "required": True,
            "content": {
                codec.JSON: {
                    "schema": model.model_json_schema(),
                    "example": model.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                },
                codec.NPZ: {
                    "schema": {"type": "string", "format": "binary"},
                    "description": f"An .npz archive (numpy.savez) holding {npz_members} as float32 or float64 arrays.",
                },
            },
        },
    }


NPZ_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            codec.NPZ: {
                "schema": {"type": "string", "format": "binary"},
                "description": f"With Accept: {codec.NPZ}: an .npz holding the same arrays, "
                "plus dtype and device as 0-d string arrays.",
            }
        }
    }
}


def with_security(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": AUTH_DOC},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": AUTH_DOC},
        }
        app.openapi_schema = schema
    return app.openapi_schema
