"""app/serve/engine_process.EngineLoop — the loop production runs — in a thread of this process,
with a fake engine (the closed form, row by row) and the real worker client over a real Unix
socket: requests that queue while the engine is busy run as one batch and each gets its rows,
the pending cap refuses at once, a request that finds no memory is refused after the memory
wait, and a big answer holds its claim until the worker has sent it. No TensorFlow."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from app.calls import Call
from app.config import Settings
from app.errors import MemoryBusy, Overloaded
from app.http.observability import EngineMetrics
from app.ipc import wire
from app.ipc.client import EngineClient
from app.serve.engine_process import EngineLoop
from tests.support import oracles
from tests.support.fakes import JACOBIAN, FakeEngine, jacobian_call
from tests.support.oracles import assert_close


class HeldEngine(FakeEngine):
    """The fake engine, whose first call waits until the test lets it go."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.entered, self.go = threading.Event(), threading.Event()

    def run(self, call: Call, Xr: np.ndarray, Yr: np.ndarray, model: str, **options: Any) -> Any:
        self.calls.append(len(Xr))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.go.wait(30), "the test never let the engine go"
        return super().run(call, Xr, Yr, model)

    def describe(self) -> dict[str, Any]:
        return {"tensorflow": "fake", "devices": ["/device:FAKE:0"], "onednn": False}


@pytest.fixture
def loop(tmp_path: Path, shm_dir: Path) -> Iterator[Callable[..., tuple[EngineLoop, HeldEngine, Settings]]]:
    """loop(**settings): an EngineLoop serving on this test's socket, in a thread."""
    started: list[tuple[EngineLoop, threading.Thread]] = []

    def start(**overrides: Any) -> tuple[EngineLoop, HeldEngine, Settings]:
        settings = Settings(runtime_dir=str(tmp_path), shm_dir=str(shm_dir), shm_prefix="t", workers=1, **overrides)
        engine = HeldEngine()
        server = wire.Server(wire.endpoint(str(tmp_path), 0))
        engine_loop = EngineLoop(engine, server, settings, {"index": 0, "pid": 1}, EngineMetrics(CollectorRegistry()))
        thread = threading.Thread(target=engine_loop.run, daemon=True)
        thread.start()
        started.append((engine_loop, thread))
        return engine_loop, engine, settings

    yield start
    for engine_loop, thread in started:
        engine_loop.stopping = True
        thread.join(10)
        engine_loop.server.close()


def _problem(rng: np.random.Generator, A: int = 3, F: int = 4) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(size=(1, A, F)), rng.normal(size=(1, F))


def _with_client(settings: Settings, scenario: Callable[[EngineClient], Any]) -> None:
    async def main() -> None:
        client = EngineClient(0, settings)
        client.start()
        try:
            await scenario(client)
        finally:
            await client.stop()

    asyncio.run(main())


async def _until_sent(client: EngineClient, n: int) -> None:
    """Until `n` requests are on the socket: a request is in flight once written to it."""
    while client.in_flight < n:
        await asyncio.sleep(0.001)


def test_requests_queued_while_busy_run_as_one_batch_and_each_gets_its_rows(loop, rng: np.random.Generator) -> None:
    _, engine, settings = loop()
    problems = [_problem(rng) for _ in range(6)]

    async def scenario(client: EngineClient) -> None:
        first = asyncio.ensure_future(client.submit(JACOBIAN, *problems[0]))
        assert await asyncio.to_thread(engine.entered.wait, 10)
        rest = [asyncio.ensure_future(client.submit(JACOBIAN, *p)) for p in problems[1:]]
        await _until_sent(client, 6)  # the loop reads them all once the engine is free
        engine.go.set()
        answers = await asyncio.gather(first, *rest)
        assert engine.calls == [1, 5]
        for (X, Y), computed in zip(problems, answers, strict=True):
            assert_close(computed.arrays["J"][0], oracles.jacobian(X[0], Y[0]), 1e-12)
            computed.release()

    _with_client(settings, scenario)


def test_the_pending_cap_refuses_what_arrives_beyond_it(loop, rng: np.random.Generator) -> None:
    _, engine, settings = loop(max_pending=2)

    async def scenario(client: EngineClient) -> None:
        first = asyncio.ensure_future(client.submit(JACOBIAN, *_problem(rng)))
        assert await asyncio.to_thread(engine.entered.wait, 10)
        later = [asyncio.ensure_future(client.submit(JACOBIAN, *_problem(rng))) for _ in range(3)]
        await _until_sent(client, 4)
        engine.go.set()
        (await first).release()
        outcomes = await asyncio.gather(*later, return_exceptions=True)
        assert [type(o).__name__ for o in outcomes] == ["Computed", "Computed", "Overloaded"]
        assert isinstance(outcomes[2], Overloaded) and "at capacity (2 requests waiting)" in outcomes[2].message
        assert engine.calls == [1, 2]  # the two admitted ran together; the third never ran

    _with_client(settings, scenario)


def test_no_memory_within_the_wait_is_refused_and_the_claims_come_back(loop, rng: np.random.Generator) -> None:
    engine_loop, engine, settings = loop(memory_budget_bytes=1000, memory_wait_s=0.2)
    engine.go.set()

    async def scenario(client: EngineClient) -> None:
        # A big answer (in the worker's segment) holds its claim until the worker releases it.
        holder = await client.submit(jacobian_call(64, 64), *_problem(rng, A=64, F=64), claim=800)
        assert engine_loop.ledger.claimed == 800
        with pytest.raises(MemoryBusy, match="800 bytes of the memory budget of 1,000"):
            await client.submit(JACOBIAN, *_problem(rng), claim=400)
        holder.release()
        while engine_loop.ledger.claimed:
            await asyncio.sleep(0.005)
        (await client.submit(JACOBIAN, *_problem(rng), claim=400)).release()  # room again

    _with_client(settings, scenario)
    assert engine.calls == [1, 1]  # the refused request was never computed


def test_a_big_answers_claim_is_held_until_the_worker_releases_it(loop, rng: np.random.Generator) -> None:
    engine_loop, engine, settings = loop()
    engine.go.set()
    X, Y = _problem(rng, A=64, F=64)  # J: 64·64·64 float64, past the inline limit

    async def scenario(client: EngineClient) -> None:
        computed = await client.submit(jacobian_call(64, 64), X, Y, claim=12345)
        assert_close(computed.arrays["J"][0], oracles.jacobian(X[0], Y[0]), 1e-12)
        assert engine_loop.ledger.claimed == 12345  # in the worker's segment, not yet sent
        computed.release()
        while engine_loop.ledger.claimed:
            await asyncio.sleep(0.005)

    _with_client(settings, scenario)
