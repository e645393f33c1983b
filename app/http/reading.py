"""Reading a request: its media type, its body (counted as it streams, against the limit) and,
for the original endpoints, the request it describes (JSON or npz, via `app.service.seed`)."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import Request

from app.calls import VJP
from app.config import Settings
from app.endpoints import Endpoint
from app.errors import InvalidInput, MalformedBody, TooLarge, UnsupportedMediaType
from app.service import codec, seed
from app.service.arrays import FLOAT_DTYPES
from app.service.seed import PolicyRequest


def query_dtype(request: Request) -> str | None:
    if not request.scope["query_string"]:
        return None  # the usual case: parsing nothing costs more than this check
    value = request.query_params.get("dtype")
    if value is not None and value not in FLOAT_DTYPES:
        msg = f"dtype {value!r} is not supported; use float32 or float64"
        raise InvalidInput(msg, [{"loc": ["query", "dtype"], "msg": msg}])
    return value


def query_flag(request: Request, name: str) -> bool:
    """A true/false query parameter (npz bodies carry their options there), false when absent."""
    if not request.scope["query_string"]:
        return False
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false"):
        msg = f"{name} must be true or false, not {value!r}"
        raise InvalidInput(msg, [{"loc": ["query", name], "msg": msg}])
    return value == "true"


WRT_CHOICES = {"X": ("X",), "Y": ("Y",), "X,Y": ("X", "Y")}


def query_wrt(request: Request) -> tuple[str, ...]:
    """What a Jacobian is taken with respect to, for npz bodies: `?wrt=X`, `Y` or `X,Y`; X if absent."""
    if not request.scope["query_string"]:
        return ("X",)
    values = request.query_params.getlist("wrt")
    if not values:
        return ("X",)
    if len(values) > 1 or values[0] not in WRT_CHOICES:
        msg = f"wrt must be X, Y or X,Y, not {', '.join(map(repr, values))}"
        raise InvalidInput(msg, [{"loc": ["query", "wrt"], "msg": msg}])
    return WRT_CHOICES[values[0]]


REQUEST_LIMIT = (
    "JACOBIAN_MAX_REQUEST_BYTES",
    "Send a smaller X, or npz (application/x-npz), which is ~4x smaller than JSON",
)
PUSH_LIMIT = ("JACOBIAN_MAX_PUSH_BYTES", "Push fewer variables at a time, as npz (application/x-npz)")


async def read_body(request: Request, limit: int, says: tuple[str, str] = REQUEST_LIMIT) -> bytes:
    """The body, counted as it streams: a missing or lying Content-Length cannot get past `limit`
    (`says`: the setting that sets it, and what to do instead)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedBody(f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise TooLarge(_too_large_body(int(declared), limit, says))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(_too_large_body(size, limit, says, streaming=True))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large_body(size: int, limit: int, says: tuple[str, str], streaming: bool = False) -> str:
    seen = f"more than {limit:,} bytes arrived" if streaming else f"the body is {size:,} bytes"
    return f"Request body too large: {seen}; the limit is {limit:,} bytes ({says[0]}). {says[1]}"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_request(
    request: Request, settings: Settings, model: type[BaseModel], endpoint: Endpoint
) -> PolicyRequest:
    media = media_type(request)
    if media not in (codec.JSON, codec.NPZ):
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'!r} is not supported; send {codec.JSON} or {codec.NPZ}"
        )
    dtype = query_dtype(request)
    products = endpoint.products
    sum_states = query_flag(request, "sum_states") if products == VJP else False  # checked for JSON too
    wrt = query_wrt(request) if endpoint.takes_wrt else ("X",)
    body = await read_body(request, settings.max_request_bytes)
    if media == codec.NPZ:
        return seed.from_npz(body, endpoint.members, dtype, settings.max_request_bytes, products, sum_states, wrt)
    return seed.from_json(body, model, dtype or settings.default_dtype, products)


def wants_npz(accept: str | None) -> bool:
    """Whether the Accept header asks for npz (anything else is answered in JSON)."""
    return codec.NPZ in (accept or "")
