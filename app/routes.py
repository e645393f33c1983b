"""Thin routes: read the body, build a Problem, call the service, encode the answer."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.responses import PlainTextResponse, Response

from app import codec
from app.config import Settings
from app.errors import (
    ClientDisconnected,
    InvalidInput,
    MalformedBody,
    NotReady,
    TooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from app.observability import exposition
from app.problems import FLOAT_DTYPES, Problem
from app.schemas import (
    ErrorBody,
    HessianRequest,
    HessianResponse,
    HvpRequest,
    HvpResponse,
    JacobianRequest,
    JacobianResponse,
    Liveness,
    Readiness,
)
from app.service import Answer, Service


class PlainRoute(APIRoute):
    """A route whose endpoint takes the Request and returns the Response itself. FastAPI still
    writes its OpenAPI entry (`response_model`, `responses`, `openapi_extra` document it), but no
    dependency solving or response serialization runs per request: the endpoint reads, validates
    and encodes on its own, and this is the hot path (FastAPI's "custom APIRoute class" hook)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint  # type: ignore[no-any-return]


router = APIRouter()  # health and metrics
compute = APIRouter(route_class=PlainRoute)  # the operations


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


def _request_body(model: type[BaseModel], npz_members: str) -> dict[str, Any]:
    return {
        # Optional ({}): the key is only required when JACOBIAN_API_KEY is set.
        "security": [{}, {"bearer": []}, {"apiKey": []}],
        "parameters": [DTYPE_PARAMETER],
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


def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise NotReady("The service is still loading TensorFlow and warming up; retry shortly")
    return service


def check_api_key(request: Request, settings: Settings) -> None:
    """When an API key is configured, require it as `Authorization: Bearer <key>` or `X-API-Key`."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    auth = request.headers.get("authorization", "")
    given = auth[7:] if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
    # compare_digest: the time taken does not reveal how much of the key matched.
    if not hmac.compare_digest(given.encode(), expected):
        raise Unauthorized("This endpoint needs the API key: send Authorization: Bearer <key> or X-API-Key: <key>")


def _query_dtype(request: Request) -> str | None:
    if not request.scope["query_string"]:
        return None  # the usual case: parsing nothing costs more than this check
    value = request.query_params.get("dtype")
    if value is not None and value not in FLOAT_DTYPES:
        msg = f"dtype {value!r} is not supported; use float32 or float64"
        raise InvalidInput(msg, [{"loc": ["query", "dtype"], "msg": msg}])
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The body, counted as it streams: a missing or lying Content-Length cannot get past `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedBody(f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise TooLarge(_too_large_body(int(declared), limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(_too_large_body(size, limit, streaming=True))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large_body(size: int, limit: int, streaming: bool = False) -> str:
    seen = f"more than {limit:,} bytes arrived" if streaming else f"the body is {size:,} bytes"
    return (
        f"Request body too large: {seen}; the limit is {limit:,} bytes (JACOBIAN_MAX_REQUEST_BYTES). "
        "Send a smaller X, or npz (application/x-npz), which is ~4x smaller than JSON"
    )


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_problem(
    request: Request, settings: Settings, model: type[BaseModel], members: tuple[str, ...]
) -> Problem:
    media = _media_type(request)
    if media not in (codec.JSON, codec.NPZ):
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'!r} is not supported; send {codec.JSON} or {codec.NPZ}"
        )
    dtype = _query_dtype(request)
    body = await read_body(request, settings.max_request_bytes)
    if media == codec.NPZ:
        return codec.decode_npz(body, members, dtype, settings.max_request_bytes)
    return codec.decode_json(body, model, dtype or settings.default_dtype)


BIG_ANSWER = 2**18  # elements; below this, encoding costs less than a thread hop

Compute = Callable[[Service, Problem, bool], Awaitable[Answer]]


async def _unless_disconnected(request: Request, work: Awaitable[Answer]) -> Answer:
    """Await `work`, but drop it if the client hangs up first: a request still queued for the
    engine is then never computed. The work runs in this task; one watcher task waits for the
    disconnect and cancels it."""
    task = asyncio.current_task()
    assert task is not None
    working = True

    def hung_up(watcher: asyncio.Future[None]) -> None:
        if working and not watcher.cancelled():  # a callback runs later: the work may be over
            task.cancel()

    watcher = asyncio.ensure_future(_disconnected(request))
    watcher.add_done_callback(hung_up)
    try:
        return await work
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            task.uncancel()  # the cancellation was ours, and it ends here
            raise ClientDisconnected("The client disconnected before the answer was ready") from None
        raise
    finally:
        working = False
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    # After the body, the server's next message for this request is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _serve(request: Request, model: type[BaseModel], members: tuple[str, ...], compute: Compute) -> Response:
    """The whole request path: no dependency injection, no thread hop before the engine's own."""
    service = get_service(request)
    check_api_key(request, service.settings)
    problem = await read_problem(request, service.settings, model, members)
    as_npz = codec.wants_npz(request.headers.get("accept"))
    answer = await _unless_disconnected(request, compute(service, problem, as_npz))
    try:
        elements = sum(a.size for a in answer.arrays.values())
        request.app.state.metrics.output_elements.labels(request.scope["path"]).observe(elements)
        encode, media = (codec.encode_npz, codec.NPZ) if as_npz else (codec.encode_json, codec.JSON)
        if elements < BIG_ANSWER:
            body = encode(answer.arrays, answer.meta)
        else:  # encoding megabytes takes tens of ms: off the event loop, so other requests keep flowing
            body = await asyncio.to_thread(encode, answer.arrays, answer.meta)
    except BaseException:
        answer.release()
        raise
    return AnswerResponse(body, media, on_sent=answer.release)


class AnswerResponse(Response):
    """An encoded answer, sent in pieces of at most `PIECE` bytes: the transport then holds back
    the rest under flow control instead of copying a 500 MB body into its buffer at once. Calls
    `on_sent` (the memory claim's release) when done, sent or not."""

    PIECE = 1 << 20

    def __init__(self, body: bytes | codec.Body, media_type: str, on_sent: Callable[[], None]) -> None:
        self.parts = body.parts if isinstance(body, codec.Body) else [body]
        super().__init__(media_type=media_type)
        size = body.size if isinstance(body, codec.Body) else len(body)
        self.headers["content-length"] = str(size)
        self.on_sent = on_sent

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            pieces = [
                view[i : i + self.PIECE]
                for part in self.parts
                for view in [memoryview(part).cast("B")]
                for i in range(0, len(view), self.PIECE)
            ]
            for piece in pieces[:-1]:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": pieces[-1] if pieces else b"", "more_body": False})
        finally:
            self.parts = []
            self.on_sent()


@compute.post(
    "/jacobian",
    summary="W = log_softmax(X·Y) and its full Jacobian in X (and optionally Y)",
    description=(
        "For each output W_i, the gradient ∂W_i/∂X shaped like X: `J[i][j][k] = ∂W_i/∂X_jk`, "
        "computed by TensorFlow autodiff. `Y` may be one state (F) or a batch (B×F). "
        'With `wrt` containing "Y", also `J_Y[i][k] = ∂W_i/∂Y_k`. '
        "JSON or npz in (Content-Type) and out (Accept)."
    ),
    response_model=JacobianResponse,
    responses={**COMPUTE_ERRORS, **NPZ_ANSWER},
    openapi_extra=_request_body(JacobianRequest, "X and Y"),
)
async def jacobian(request: Request) -> Response:
    return await _serve(request, JacobianRequest, ("X", "Y"), Service.jacobian)


@compute.post(
    "/hessian",
    summary="W and the full Hessian of every W_i in X",
    description=(
        "`H[i][j][k][l][m] = ∂²W_i/∂X_jk∂X_lm`, shape A×A×F×A×F (batch: B×…), by nested TensorFlow "
        "tapes. H grows as B·A³·F²; for large X use /hvp. JSON or npz in and out."
    ),
    response_model=HessianResponse,
    responses={**COMPUTE_ERRORS, **NPZ_ANSWER},
    openapi_extra=_request_body(HessianRequest, "X and Y"),
)
async def hessian(request: Request) -> Response:
    return await _serve(request, HessianRequest, ("X", "Y"), Service.hessian)


@compute.post(
    "/hvp",
    summary="Hessian-vector products along a direction V, without forming H",
    description=(
        "`HV[i][j][k] = Σ_lm H[i][j][k][l][m]·V[l][m]`, shape A×A×F (batch: B×A×A×F), by "
        "forward-over-reverse autodiff (a JVP of the Jacobian): costs about one Jacobian."
    ),
    response_model=HvpResponse,
    responses={**COMPUTE_ERRORS, **NPZ_ANSWER},
    openapi_extra=_request_body(HvpRequest, "X, Y and V"),
)
async def hvp(request: Request) -> Response:
    return await _serve(request, HvpRequest, ("X", "Y", "V"), Service.hvp)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Requests by route and status, latency histograms, TensorFlow compute time, batch sizes, "
    "output elements, and rejected requests by reason, in the Prometheus text format.",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        404: COMPUTE_ERRORS[404],
        405: COMPUTE_ERRORS[405],
    },
    tags=["operations"],
)
async def metrics(request: Request) -> Response:
    return Response(exposition(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/health/live",
    summary="Liveness",
    description="200 while the process runs, even while TensorFlow is still loading.",
    response_model=Liveness,
    responses={404: COMPUTE_ERRORS[404], 405: COMPUTE_ERRORS[405]},
    tags=["health"],
)
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="Readiness",
    description="200 once TensorFlow is loaded and every computation is traced and warmed up; 503 before. "
    "The body names the TensorFlow version and the visible devices.",
    response_model=Readiness,
    responses={
        404: COMPUTE_ERRORS[404],
        405: COMPUTE_ERRORS[405],
        503: {"model": Readiness, "description": "Still loading or warming up."},
    },
    tags=["health"],
)
async def ready(request: Request) -> Response:
    state = request.app.state
    if state.runtime is None:
        fields = {"status": state.status, "reason": "loading TensorFlow and warming up"}
    else:
        fields = state.runtime.readiness()
    body = Readiness(
        **fields, xla=state.settings.xla, shm=state.shm, memory_budget_bytes=state.settings.memory_budget_bytes
    )
    return Response(body.model_dump_json(), 200 if body.status == "ready" else 503, media_type=codec.JSON)
