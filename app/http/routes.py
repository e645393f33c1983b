"""The original endpoints (`app.endpoints`): each reads its request (`app.http.reading`), has the
built-in model's front compute it (`app.service.front`), and encodes the answer
(`app.http.responses`); health and metrics. OpenAPI fragments: `app.http.openapi`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.responses import PlainTextResponse, Response

from app import endpoints
from app.calls import VJP
from app.http import runtime, schemas
from app.http.auth import check_api_key
from app.http.hangup import unless_disconnected
from app.http.observability import exposition
from app.http.openapi import COMPUTE_ERRORS, NPZ_ANSWER, SUM_STATES_PARAMETER, WRT_PARAMETER, request_body
from app.http.reading import read_request, wants_npz
from app.http.responses import encoded
from app.http.schemas import Liveness, Readiness
from app.service import codec, front
from app.service.outputs import Encoding


class PlainRoute(APIRoute):
    """A route whose endpoint takes the Request and returns the Response itself. FastAPI still
    writes its OpenAPI entry (`response_model`, `responses`, `openapi_extra` document it), but no
    dependency solving or response serialization runs per request: the endpoint reads, validates
    and encodes on its own, and this is the hot path (FastAPI's "custom APIRoute class" hook)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


router = APIRouter()  # health and metrics


def _endpoint(e: endpoints.Endpoint, request_model: type[BaseModel]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        """Decode, compute through the built-in model's front, encode: the whole request path,
        with no dependency injection and no thread hop before the engine's own."""
        service = runtime.service(request)
        s = service.settings
        check_api_key(request, s)
        read = await read_request(request, s, request_model, e)
        card = await runtime.card(request, endpoints.BUILTIN)
        npz = wants_npz(request.headers.get("accept"))
        out = Encoding.chosen(npz, s.max_output_elements, s.max_json_output_elements, f"Accept: {codec.NPZ}")
        answer = await unless_disconnected(request, front.serve(service, card, e, read, out))
        elements = sum(a.size for a in answer.arrays.values())
        runtime.runtime(request).metrics.output_elements.labels(request.scope["path"]).observe(elements)
        return await encoded(answer, npz)

    endpoint.__name__ = e.name  # the OpenAPI operationId's stem
    return endpoint


def compute_router() -> APIRouter:
    """The original endpoints, from their descriptions (`app.endpoints`)."""
    compute = APIRouter(route_class=PlainRoute)
    for e in endpoints.ENDPOINTS.values():
        request_model, response_model = schemas.BODIES[e.name]
        extra = [WRT_PARAMETER] if e.takes_wrt else [SUM_STATES_PARAMETER] if e.products == VJP else []
        compute.add_api_route(
            f"/{e.name}",
            _endpoint(e, request_model),
            methods=["POST"],
            summary=e.summary.format(formula=endpoints.FORMULA),
            description=e.description,
            response_model=response_model,
            responses={**COMPUTE_ERRORS, **NPZ_ANSWER},
            openapi_extra=request_body(request_model, e.body_text(), extra_parameters=extra),
        )
    return compute


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
    return Response(exposition(runtime.runtime(request).metrics), media_type=CONTENT_TYPE_LATEST)


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
    state = runtime.runtime(request)
    if state.engines is None:
        fields = {"status": state.status, "reason": "loading TensorFlow and warming up"}
    else:
        await state.engines.first_contact()
        fields = state.engines.readiness()
    settings = state.settings
    body = Readiness(**fields, xla=settings.xla, shm=state.shm, memory_budget_bytes=settings.memory_budget_bytes)
    return Response(body.model_dump_json(), 200 if body.status == "ready" else 503, media_type=codec.JSON)
