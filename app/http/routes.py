"""The routes: each compute endpoint reads its Problem (`app.http.reading`), calls the service, and
encodes the answer (`app.http.responses`); health and metrics. OpenAPI fragments: `app.http.openapi`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.responses import PlainTextResponse, Response

from app import ops
from app.http import runtime
from app.http.auth import check_api_key
from app.http.hangup import unless_disconnected
from app.http.observability import exposition
from app.http.openapi import COMPUTE_ERRORS, NPZ_ANSWER, SUM_STATES_PARAMETER, WRT_PARAMETER, request_body
from app.http.reading import read_problem
from app.http.responses import encoded
from app.http.schemas import (
    HessianRequest,
    HessianResponse,
    HvpRequest,
    HvpResponse,
    JacobianRequest,
    JacobianResponse,
    JvpRequest,
    JvpResponse,
    Liveness,
    Readiness,
    VjpRequest,
    VjpResponse,
)
from app.service import codec
from app.service.dataplane import Answer, Service
from app.service.outputs import Encoding
from app.service.problems import Problem


class PlainRoute(APIRoute):
    """A route whose endpoint takes the Request and returns the Response itself. FastAPI still
    writes its OpenAPI entry (`response_model`, `responses`, `openapi_extra` document it), but no
    dependency solving or response serialization runs per request: the endpoint reads, validates
    and encodes on its own, and this is the hot path (FastAPI's "custom APIRoute class" hook)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


router = APIRouter()  # health and metrics
compute = APIRouter(route_class=PlainRoute)  # the operations


Compute = Callable[[Service, Problem, Encoding], Awaitable[Answer]]


async def _serve(request: Request, model: type[BaseModel], members: tuple[str, ...], compute: Compute) -> Response:
    """Decode, compute, encode: the whole request path, with no dependency injection and no thread
    hop before the engine's own."""
    service = runtime.service(request)
    check_api_key(request, service.settings)
    problem = await read_problem(request, service.settings, model, members)
    s = service.settings
    npz = codec.wants_npz(request.headers.get("accept"))
    out = Encoding.chosen(npz, s.max_output_elements, s.max_json_output_elements, f"Accept: {codec.NPZ}")
    answer = await unless_disconnected(request, compute(service, problem, out))
    elements = sum(a.size for a in answer.arrays.values())
    runtime.runtime(request).metrics.output_elements.labels(request.scope["path"]).observe(elements)
    return await encoded(answer, npz)


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
    openapi_extra=request_body(JacobianRequest, "X and Y", extra_parameters=[WRT_PARAMETER]),
)
async def jacobian(request: Request) -> Response:
    return await _serve(request, JacobianRequest, ("X", "Y"), Service.jacobian)


@compute.post(
    "/hessian",
    summary="W and the full Hessian of every W_i in X",
    description=(
        f"`H[i][j][k][l][m] = ∂²W_i/∂X_jk∂X_lm`, shape {ops.shape_text(ops.HESSIAN, 'H')}, by nested TensorFlow "
        "tapes. H grows as B·A³·F²; for large X use /hvp. JSON or npz in and out."
    ),
    response_model=HessianResponse,
    responses={**COMPUTE_ERRORS, **NPZ_ANSWER},
    openapi_extra=request_body(HessianRequest, "X and Y"),
)
async def hessian(request: Request) -> Response:
    return await _serve(request, HessianRequest, ("X", "Y"), Service.hessian)


@compute.post(
    "/hvp",
    summary="Hessian-vector products along a direction V, without forming H",
    description=(
        f"`HV[i][j][k] = Σ_lm H[i][j][k][l][m]·V[l][m]`, shape {ops.shape_text(ops.HVP, 'HV')}, by "
        "forward-over-reverse autodiff (a JVP of the Jacobian): costs about one Jacobian."
    ),
    response_model=HvpResponse,
    responses={**COMPUTE_ERRORS, **NPZ_ANSWER},
    openapi_extra=request_body(HvpRequest, "X, Y and V"),
)
async def hvp(request: Request) -> Response:
    return await _serve(request, HvpRequest, ("X", "Y", "V"), Service.hvp)


@compute.post(
    "/vjp",
    summary="Vector-Jacobian products Σ_i U_i·∂W_i/∂X, without forming J",
    description=(
        "`UJ[..., j, k] = Σ_i U[..., i]·∂W_i/∂X_jk` by reverse-mode autodiff: one forward pass, K reverse "
        "passes, A·F numbers per state instead of J's A²·F. `U` is shaped like W (A, or B×A), with an optional "
        "leading K axis. `sum_states` (batch only) sums over the states: Σ_b advantage_b·∇_X log π(a_b|s_b), "
        "a policy gradient in one call. For npz bodies, sum_states is a query parameter."
    ),
    response_model=VjpResponse,
    responses={**COMPUTE_ERRORS, **NPZ_ANSWER},
    openapi_extra=request_body(VjpRequest, "X, Y and U", extra_parameters=[SUM_STATES_PARAMETER]),
)
async def vjp(request: Request) -> Response:
    return await _serve(request, VjpRequest, ("X", "Y", "U"), Service.vjp)


@compute.post(
    "/jvp",
    summary="Jacobian-vector products J·V along tangents V, without forming J",
    description=(
        "`JV[..., i] = Σ_jk ∂W_i/∂X_jk·V[..., j, k]` by forward-mode autodiff (ForwardAccumulator): one "
        "forward pass serves all K tangents. `V` is shaped like X (A×F), with an optional leading K axis; "
        "JV is shaped like W (A, or B×A) with that K axis."
    ),
    response_model=JvpResponse,
    responses={**COMPUTE_ERRORS, **NPZ_ANSWER},
    openapi_extra=request_body(JvpRequest, "X, Y and V"),
)
async def jvp(request: Request) -> Response:
    return await _serve(request, JvpRequest, ("X", "Y", "V"), Service.jvp)


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
        fields = state.engines.readiness()
    settings = state.settings
    body = Readiness(**fields, xla=settings.xla, shm=state.shm, memory_budget_bytes=settings.memory_budget_bytes)
    return Response(body.model_dump_json(), 200 if body.status == "ready" else 503, media_type=codec.JSON)
