"""The ASGI app: routes, error handlers, and the lifespan that loads TensorFlow.

TensorFlow is imported and the repository's models loaded in a background task, so /health/live
answers at once and /health/ready says 503 until the engine is loaded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import lifeline
from app.catalog import BUILTIN_CARD, Card, card_from_dict
from app.config import Settings, get_settings
from app.http import cards, model_docs, model_routes, openapi, umbridge_routes
from app.http.handlers import install_handlers
from app.http.observability import Metrics, RequestObserver
from app.http.routes import compute_router, router
from app.http.runtime import Runtime
from app.http.v2 import rest
from app.ipc import shm
from app.scheduling.batcher import Batcher, BatchStats
from app.service.dataplane import Service

if TYPE_CHECKING:
    from app.engine.derivatives import Engine  # TensorFlow: imported for real off the event loop, in _load_engine

log = logging.getLogger("app")

DESCRIPTION = """
W = log_softmax(X·Y) and its derivatives — the full Jacobian, the Hessian and Hessian-vector
products in X, the Jacobian in Y, and vector-Jacobian / Jacobian-vector products that never form
J (a policy gradient in one call) — computed by TensorFlow autodiff.

JSON or npz (`application/x-npz`) in and out. Every error has the same body: `{code, message, details}`.

**Authentication**: off by default. When the server sets `JACOBIAN_API_KEY`, the compute endpoints
require it as `Authorization: Bearer <key>` or `X-API-Key: <key>` (401 otherwise).
"""


def _load_engine(settings: Settings) -> Engine:
    from app.engine import derivatives as engine  # the TensorFlow import happens here, off the event loop

    engine.enable_gpu_memory_growth()
    return engine.Engine.from_settings(settings)


class InProcessEngine:
    """TensorFlow in this process, behind the asyncio batcher: the app run by plain uvicorn or
    a test client, without the supervisor's engine processes."""

    def __init__(self, engine: Engine, batcher: Batcher) -> None:
        self.engine, self.batcher = engine, batcher
        self.submit = batcher.submit

    async def stop(self) -> None:
        await self.batcher.stop()

    async def first_contact(self) -> None:
        """In this process: nothing to contact."""

    async def push(self, model: str, values: dict[str, Any]) -> tuple[int, Card]:
        return self.engine.push(model, values)

    async def values(self, model: str, version: int = 0) -> tuple[int, dict[str, Any]]:
        return self.engine.values(model, version)

    def cards(self) -> list[dict[str, Any]] | None:
        models: list[dict[str, Any]] = self.engine.describe()["models"]
        return models

    def models(self) -> dict[str, Card] | None:
        return {name: loaded.card for name, loaded in self.engine.repository.items()}

    def readiness(self) -> dict[str, Any]:
        return {
            "status": "ready",
            "engine_pids": [os.getpid()],
            "engines": [{"index": 0, "pid": os.getpid(), "state": "ready"}],
            **self.engine.describe(),
            "memory_claimed_bytes": self.batcher.ledger.claimed,
        }


async def _start_in_process(app: FastAPI) -> None:
    state: Runtime = app.state.runtime
    settings = state.settings
    try:
        eng = state.engine if state.engine is not None else await asyncio.to_thread(_load_engine, settings)
    except Exception:
        log.exception("TensorFlow failed to load")
        state.status = "failed"
        return
    metrics = state.metrics

    def observe(stats: BatchStats) -> None:
        assert metrics.engine is not None
        metrics.engine.observe(stats)

    batcher = Batcher(
        eng.run,
        settings.max_batch_rows,
        settings.max_pending,
        on_batch=observe,
        memory_budget=settings.memory_budget_bytes,
        memory_wait_s=settings.memory_wait_s,
        deadline_s=settings.deadline_s,
        pin=eng.pin,
    )
    batcher.start()
    state.engine = eng
    state.engines = in_process = InProcessEngine(eng, batcher)
    state.service = Service(settings, batcher)
    state.status = "ready"
    ready = in_process.readiness()
    onednn = "on" if ready["onednn"] else "off"
    log.info(
        "ready: TensorFlow %s on %s, oneDNN %s, memory budget %s bytes",
        ready["tensorflow"],
        ", ".join(ready["devices"]),
        onednn,
        f"{settings.memory_budget_bytes:,}",
    )


def _start_worker(app: FastAPI) -> None:
    """An HTTP worker started by the supervisor: no TensorFlow here, the engines are processes."""
    from app.ipc.engines import Engines

    lifeline.die_with_parent()
    state: Runtime = app.state.runtime
    settings = state.settings
    engines = Engines(settings, observe_ipc=state.metrics.ipc.observe)
    engines.start()
    state.shm = shm.shm_report(settings.shm_dir, settings.max_output_elements * 8)
    state.engines = engines
    state.service = Service(settings, engines)
    state.status = "running"


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: Runtime = app.state.runtime
    if state.settings.runtime_dir is not None:
        _start_worker(app)
        yield
        if state.engines is not None:
            await state.engines.stop()
        return
    starting = asyncio.create_task(_start_in_process(app))
    yield
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    if state.engines is not None:
        await state.engines.stop()


def _cards(app: FastAPI) -> list[Card]:
    """The models as the engines loaded them, once they have reported; the built-in one until then."""
    engines = app.state.runtime.engines
    cards = None if engines is None else engines.cards()
    return [BUILTIN_CARD] if cards is None else [card_from_dict(c) for c in cards]


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The app, serving the built-in model and the repository's. With `engine`, one already
    loaded is served in this process
    instead of loading another: the settings' limits and budget with the same models."""
    app = FastAPIOffline(
        title="Jacobian service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry hooks (on by default since 0.16x) cost every request a span,
        # metrics and log records we do not export; the service has its own metrics and log line.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    settings = settings or get_settings()
    metrics = Metrics()
    metrics.memory_budget.set(settings.memory_budget_bytes)
    app.state.runtime = Runtime(settings, metrics, engine=engine)
    app.add_middleware(RequestObserver, metrics=metrics)
    install_handlers(app)
    app.include_router(compute_router())
    app.include_router(cards.router)
    app.include_router(model_routes.router)  # after GET /models/{name}
    app.include_router(router)
    for v2_router in rest.routers():
        app.include_router(v2_router)
    app.include_router(umbridge_routes.router)
    app.openapi = lambda: model_docs.with_models(openapi.with_security(app), _cards(app))  # type: ignore[method-assign]
    return app


app = create_app()
