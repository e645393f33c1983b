"""Request ids, one log line per request, and Prometheus metrics — one pure ASGI middleware
(no BaseHTTPMiddleware: it would add a task and a copy per request on the hot path)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("app.requests")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)


class EngineMetrics:
    """What the batcher in front of TensorFlow records, in whichever process runs it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.compute = Histogram(
            "jacobian_compute_seconds", "TensorFlow time per engine call", ["op"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_rows = Histogram(
            "jacobian_batch_rows", "States per engine call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r
        )
        self.batch_requests = Histogram(
            "jacobian_batch_requests", "Requests per engine call", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.batch_workers = Histogram(
            "jacobian_batch_workers",
            "HTTP worker processes with requests in one engine call",
            buckets=(1, 2, 4, 8, 16),
            registry=r,
        )

        self.memory_claimed = Gauge(
            "jacobian_memory_claimed_bytes",
            "Bytes of the memory budget claimed by requests in flight",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._claimed = 0
        self._compute: dict[str, Any] = {}

    def claimed(self, nbytes: int) -> None:
        if nbytes != self._claimed:  # called on every turn of the engine loop; a write costs µs
            self._claimed = nbytes
            self.memory_claimed.set(nbytes)

    def observe(self, stats: Any) -> None:
        compute = self._compute.get(stats.op)
        if compute is None:  # a labelled child once per operation: `labels` costs µs per call
            compute = self._compute[stats.op] = self.compute.labels(stats.op)
        compute.observe(stats.seconds)
        self.batch_rows.observe(stats.rows)
        self.batch_requests.observe(stats.requests)
        self.batch_workers.observe(stats.workers)


def multiprocess_dir() -> str | None:
    """Set by the supervisor: every process then writes its metrics to files there (prometheus_client's
    multiprocess mode), and /metrics, served by any worker, adds them up."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    """All of the service's metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "jacobian_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "jacobian_request_seconds", "HTTP request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.in_progress = Gauge(
            "jacobian_requests_in_progress",
            "HTTP requests being handled, by method",
            ["method"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter("jacobian_rejected_requests", "Requests refused, by reason", ["reason"], registry=r)
        self.ipc = Histogram(
            "jacobian_ipc_seconds",
            "Time a request spends between an HTTP worker and the engine process, less TensorFlow's",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.memory_budget = Gauge(
            "jacobian_memory_budget_bytes",
            "The memory budget for requests in flight (JACOBIAN_MEMORY_BUDGET_BYTES)",
            registry=r,
            multiprocess_mode="max",
        )
        self.engine: EngineMetrics | None = None if multiprocess_dir() else EngineMetrics(r)
        self.output_elements = Histogram(
            "jacobian_output_elements",
            "Elements in each answer",
            ["op"],
            buckets=tuple(4.0**k for k in range(1, 14)),
            registry=r,
        )


class RequestObserver:
    """Honours an incoming X-Request-ID (or makes one), returns it, logs and counts each request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """A metric's labelled child, looked up once: `labels` costs µs on every call."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        # A bounded label: any token is a valid HTTP method.
        in_progress = self._child(
            self.metrics.in_progress, scope["method"] if scope["method"] in ("GET", "POST") else "other"
        )
        in_progress.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            in_progress.dec()
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            self._child(self.metrics.requests, route, str(status)).inc()
            self._child(self.metrics.latency, route).observe(elapsed)
            code = scope["state"].get("error_code")
            if code:
                self.metrics.rejected.labels(code).inc()
            log.info(
                "%s %s %d %.1fms request_id=%s",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1e3,
                request_id,
            )


def exposition(metrics: Metrics) -> bytes:
    """The Prometheus text for /metrics: this process's registry, or every process's files."""
    if multiprocess_dir() is None:
        return generate_latest(metrics.registry)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            # Echo only a sane id back: it lands in logs and headers.
            return text if 0 < len(text) <= 128 and text.isprintable() else None
    return None


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    # Unmatched paths share one label, so scanners cannot blow up the metric's cardinality.
    return getattr(route, "path", None) or "unmatched"
