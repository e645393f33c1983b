"""Bytes <-> arrays, for each media type: JSON bodies through pydantic's fast JSON path, JSON
responses serialized straight from NumPy with orjson, npz in and out (`app.service.npz`)."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from app.errors import InvalidInput, MalformedBody

JSON = "application/json"
NPZ = "application/x-npz"

# The tags of the JSON body's unions (app.http.schemas), left out of error locations.
UNION_TAGS = ("state", "batch", "vector", "matrix", "tensor3")


def validation_details(err: ValidationError) -> list[dict[str, Any]]:
    # loc and msg only: echoing `input` back could return megabytes of the request.
    return [
        {"loc": [part for part in e["loc"] if part not in UNION_TAGS], "msg": e["msg"]}
        for e in err.errors(include_url=False)
    ]


M = TypeVar("M", bound=BaseModel)


def validated(body: bytes, model: type[M], holding: str) -> M:
    """The JSON body as `model`: 400 if it is empty or not JSON, 422 if it does not match."""
    if not body.strip():
        raise MalformedBody(f"The request body is empty; send a JSON object with {holding}")
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        details = validation_details(err)
        if any(e["type"] == "json_invalid" for e in err.errors()):
            raise MalformedBody(f"The request body is not valid JSON: {details[0]['msg']}", details) from None
        summary = "; ".join(f"{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in details[:5])
        raise InvalidInput(f"The request does not match the schema: {summary}", details) from None


def encode_json(arrays: dict[str, np.ndarray], meta: dict[str, str]) -> bytes:
    contiguous = {k: np.ascontiguousarray(a) for k, a in arrays.items()}
    return orjson.dumps({**contiguous, **meta}, option=orjson.OPT_SERIALIZE_NUMPY)
