"""The ASGI app: routes, error handlers, and the lifespan that loads TensorFlow.

TensorFlow is imported and warmed up in a background task, so /health/live answers at once
and /health/ready says 503 until the engine is traced and warm."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from app import ipc, lifeline
from app.batcher import Batcher, BatchStats, RunRows
from app.config import Settings, get_settings
from app.handlers import install_handlers
from app.observability import Metrics, RequestObserver
from app.routes import compute, router
from app.service import Service

log = logging.getLogger("app")

DESCRIPTION = """
W = log_softmax(X·Y) and its derivatives — the full Jacobian, the Hessian and Hessian-vector
products in X, and the Jacobian in Y — computed by TensorFlow autodiff.

JSON or npz (`application/x-npz`) in and out. Every error has the same body: `{code, message, details}`.

**Authentication**: off by default. When the server sets `JACOBIAN_API_KEY`, the compute endpoints
require it as `Authorization: Bearer <key>` or `X-API-Key: <key>` (401 otherwise).
"""


AUTH_DOC = (
    "Only when the server sets JACOBIAN_API_KEY: then /jacobian, /hessian and /hvp need the key, "
    "as a bearer token or an X-API-Key header (401 without it). Health, metrics and docs stay open."
)


def _load_engine(settings: Settings) -> Any:
    from app import engine  # the TensorFlow import happens here, off the event loop

    engine.enable_gpu_memory_growth()
    eng = engine.Engine(xla=settings.xla, xla_after=settings.xla_after, xla_max_shapes=settings.xla_max_shapes)
    eng.warm_up()
    return eng


class InProcessEngine:
    """TensorFlow in this process, behind the asyncio batcher: the app run by plain uvicorn or
    a test client, without the supervisor's engine processes."""

    def __init__(self, engine: Any, batcher: Batcher) -> None:
        self.engine, self.batcher = engine, batcher
        self.submit = batcher.submit

    async def stop(self) -> None:
        await self.batcher.stop()

    def readiness(self) -> dict[str, Any]:
        return {
            "status": "ready",
            "engine_pids": [os.getpid()],
            "engines": [{"index": 0, "pid": os.getpid(), "state": "ready"}],
            **self.engine.describe(),
            "memory_claimed_bytes": self.batcher.ledger.claimed,
        }


async def _start_in_process(app: FastAPI) -> None:
    state, settings = app.state, app.state.settings
    try:
        eng = await asyncio.to_thread(_load_engine, settings)
    except Exception:
        log.exception("TensorFlow failed to load")
        state.status = "failed"
        return
    metrics: Metrics = state.metrics

    def observe(stats: BatchStats) -> None:
        assert metrics.engine is not None
        metrics.engine.observe(stats)

    batcher = Batcher(
        state.wrap_run_rows(eng.run_rows),
        settings.max_batch_rows,
        settings.max_pending,
        on_batch=observe,
        memory_budget=settings.memory_budget_bytes,
        memory_wait_s=settings.memory_wait_s,
    )
    batcher.start()
    state.engine = eng
    state.runtime = InProcessEngine(eng, batcher)
    state.service = Service(settings, batcher)
    state.status = "ready"
    ready = state.runtime.readiness()
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
    from app.engine_client import Engines

    lifeline.die_with_parent()
    state, settings = app.state, app.state.settings
    engines = Engines(settings, observe_ipc=state.metrics.ipc.observe)
    engines.start()
    state.shm = ipc.shm_report(settings.shm_dir, settings.max_output_elements * 8)
    state.runtime = engines
    state.service = Service(settings, engines)
    state.status = "running"


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if app.state.settings.runtime_dir is not None:
        _start_worker(app)
        yield
        await app.state.runtime.stop()
        return
    starting = asyncio.create_task(_start_in_process(app))
    yield
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    if app.state.runtime is not None:
        await app.state.runtime.stop()


def create_app(settings: Settings | None = None, wrap_run_rows: Callable[[RunRows], RunRows] | None = None) -> FastAPI:
    """The app; `wrap_run_rows` wraps every engine call (tests use it to hold the engine busy)."""
    app = FastAPIOffline(
        title="Jacobian service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry hooks (on by default since 0.16x) cost every request a span,
        # metrics and log records we do not export; the service has its own metrics and log line.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings or get_settings()
    app.state.wrap_run_rows = wrap_run_rows or (lambda run_rows: run_rows)
    app.state.status = "starting"
    app.state.engine = None
    app.state.service = None
    app.state.runtime = None
    app.state.shm = None
    app.state.metrics = Metrics()
    app.state.metrics.memory_budget.set(app.state.settings.memory_budget_bytes)
    app.add_middleware(RequestObserver, metrics=app.state.metrics)
    install_handlers(app)
    app.include_router(compute)
    app.include_router(router)
    app.openapi = lambda: _openapi_with_security(app)  # type: ignore[method-assign]
    return app


def _openapi_with_security(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": AUTH_DOC},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": AUTH_DOC},
        }
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app()
