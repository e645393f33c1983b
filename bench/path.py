"""Where a small request's time goes, piece by piece, without TensorFlow's or the network's noise:

- the HTTP worker's ASGI app on a 2×4 /jacobian, driven directly, its engine answering at once;
- the round trip between an HTTP worker and an engine process (the real `EngineClient` and
  `EngineLoop` over the Unix socket), the engine answering at once;
- the engine's call of the built-in Jacobian (XLA compiled), hot and after 1 ms idle.

Run: python -m bench.path (µs per request, the best of several rounds; compare two checkouts side
by side in one run, PYTHONPATH=<checkout>). py-spy on a served load shows the same path whole.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

RUNTIME = os.environ.setdefault("BENCH_PATH_DIR", tempfile.mkdtemp())  # the child sees the same
W = np.full((1, 2), 0.5, np.float32)
J = np.full((1, 2, 2, 4), 0.25, np.float32)
ANSWER = {"outputs|W": W, "jacobian|W|X": J}
BODY = b'{"X": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]], "Y": [1.0, 2.0, 3.0, 4.0]}'


def _settings() -> Any:
    from app.config import Settings

    return Settings(runtime_dir=RUNTIME)


class _Instant:
    """An engine, or the engines' client, that answers at once."""

    def run(self, call: Any, *rows: np.ndarray, model: str, deadline: float | None = None) -> Any:
        return SimpleNamespace(arrays=ANSWER, device="/device:CPU:0")

    def describe(self) -> dict[str, Any]:
        names = ("trace_count", "xla_shapes", "xla_compiling")
        return {"tensorflow": "-", "devices": [], "onednn": False, "models": [], **dict.fromkeys(names, 0)}

    async def submit(self, call: Any, *rows: np.ndarray, **_: Any) -> Any:
        from app.calls import Computed

        return Computed(ANSWER, "/device:CPU:0", lambda: None)

    def models(self) -> dict[str, Any]:
        from app.catalog import BUILTIN_CARD

        return {BUILTIN_CARD.name: BUILTIN_CARD}


async def _asgi(n: int) -> float:
    from app.http.app import create_app
    from app.service.dataplane import Service

    app = create_app(_settings())
    state = app.state.runtime
    state.service, state.engines, state.status = Service(state.settings, _Instant()), _Instant(), "ready"
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    scope = {"type": "http", "method": "POST", "path": "/jacobian", "raw_path": b"/jacobian"}
    scope |= {"query_string": b"", "headers": headers, "app": app, "http_version": "1.1", "root_path": ""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        assert message.get("status", 200) == 200, message

    start = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
        await asyncio.sleep(0)  # a served request gives the loop a turn: its tasks run
    return (time.perf_counter() - start) / n


def _engine_process() -> None:
    from prometheus_client import CollectorRegistry

    from app.http.observability import EngineMetrics
    from app.ipc import wire
    from app.serve.engine_process import EngineLoop

    server = wire.Server(wire.endpoint(RUNTIME, 0))
    info = {"index": 0, "pid": os.getpid()}
    EngineLoop(_Instant(), server, _settings(), info, EngineMetrics(CollectorRegistry())).run()


async def _round_trips(n: int, rounds: int) -> list[float]:
    from app.calls import Call
    from app.ipc.client import EngineClient

    client = EngineClient(0, _settings())
    client.start()
    while client.state != "ready":
        await asyncio.sleep(0.01)
    call = Call("jacobian", ("X",), ("W",), dtype="float32", row_bytes=W.nbytes + J.nbytes, arrays=2)
    X, Y = np.ones((1, 2, 4), np.float32), np.ones((1, 4), np.float32)
    times = []
    for _ in range(rounds + 1):  # the first round warms up
        start = time.perf_counter()
        for _ in range(n):
            (await client.submit(call, X, Y, claim=1 << 20, model="policy")).release()
        times.append((time.perf_counter() - start) / n)
    await client.stop()
    return times[1:]


def _engine_call(n: int) -> tuple[float, float]:
    from app.calls import Call
    from app.engine.derivatives import Engine

    engine = Engine(xla=True, xla_after=1)
    X, Y = np.ones((1, 2, 4), np.float32), np.ones((1, 4), np.float32)
    call = Call("jacobian", ("X",), ("W",), dtype="float32", row_bytes=W.nbytes + J.nbytes, arrays=2)
    for _ in range(3):
        engine.run(call, X, Y, model="policy")
    engine.wait_for_compiles()

    def median(idle: float) -> float:
        times = []
        for _ in range(n):
            time.sleep(idle)
            start = time.perf_counter()
            engine.run(call, X, Y, model="policy", deadline=time.monotonic() + 30)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return median(0.0), median(0.001)


def main() -> int:
    import app  # noqa: F401  (TensorFlow's environment, before anything imports it)

    asgi = min(asyncio.run(_asgi(3000)) for _ in range(5))
    child = multiprocessing.get_context("spawn").Process(target=_engine_process, daemon=True)
    child.start()
    try:
        trips = asyncio.run(_round_trips(3000, 5))
    finally:
        child.kill()
    hot, idle = _engine_call(2000)
    print(f"HTTP worker's ASGI app, 2×4 /jacobian (engine instant): {asgi * 1e6:.0f} µs")
    print(
        f"worker ↔ engine round trip (engine instant): {min(trips) * 1e6:.0f} µs (median of rounds "
        f"{statistics.median(trips) * 1e6:.0f})"
    )
    print(f"engine call, 2×4 Jacobian (XLA): {hot * 1e6:.0f} µs hot, {idle * 1e6:.0f} µs after 1 ms idle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
