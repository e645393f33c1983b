"""The in-process batcher (the asyncio driver of `app.scheduling.policy`) and the disconnect guard,
with a fake engine (the closed form, row by row) whose first call holds the worker until the test
releases it: every "while busy" is a state waited for, not a sleep. No TensorFlow."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
from starlette.requests import Request

from app.calls import Call
from app.errors import ClientDisconnected, Overloaded
from app.http.hangup import unless_disconnected
from app.scheduling.batcher import Batcher
from tests.support import oracles
from tests.support.fakes import JACOBIAN, FakeEngine
from tests.support.oracles import assert_close


class SlowFirstCall:
    """Runs the fake engine; the first call holds the worker thread until released."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, call: Call, *rows: np.ndarray, model: str, **options: Any):
        self.calls.append(len(rows[0]))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(60), "the test never released the worker"
        return self.engine.run(call, *rows, model=model)


@pytest.fixture
def plain_engine() -> FakeEngine:
    return FakeEngine()


def problem(rng: np.random.Generator, A: int = 3, F: int = 4) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(size=(1, A, F)), rng.normal(size=(1, F))


async def busy_batcher(
    plain_engine: FakeEngine, rng: np.random.Generator, max_pending: int = 64
) -> tuple[SlowFirstCall, Batcher, asyncio.Future]:
    """A started batcher whose worker is held by a first request until `slow.release` is set."""
    slow = SlowFirstCall(plain_engine)
    batcher = Batcher(slow, max_batch_rows=64, max_pending=max_pending)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(JACOBIAN, *problem(rng)))
    assert await asyncio.to_thread(slow.entered.wait, 60)  # the first call now holds the worker
    return slow, batcher, first


async def until_pending(batcher: Batcher, n: int) -> None:
    """Let submitted tasks run up to their wait for the engine."""
    while batcher.pending != n:
        await asyncio.sleep(0)


def test_requests_queued_while_busy_run_as_one_batch_and_each_gets_its_rows(
    plain_engine: FakeEngine, rng: np.random.Generator
) -> None:
    async def scenario() -> None:
        slow, batcher, first = await busy_batcher(plain_engine, rng)
        queued = [problem(rng) for _ in range(6)]
        waiting = [asyncio.ensure_future(batcher.submit(JACOBIAN, *p)) for p in queued]
        await until_pending(batcher, 7)
        slow.release.set()
        await first
        results = await asyncio.gather(*waiting)
        assert slow.calls == [1, 6]  # no waiting window, and everything queued went together
        for (X, Y), result in zip(queued, results, strict=True):
            assert_close(result.arrays["J"][0], oracles.jacobian(X[0], Y[0]), 1e-9)
        await batcher.stop()

    asyncio.run(scenario())


def test_cancelled_requests_are_never_computed(plain_engine: FakeEngine, rng: np.random.Generator) -> None:
    async def scenario() -> None:
        slow, batcher, first = await busy_batcher(plain_engine, rng)
        gone = [asyncio.ensure_future(batcher.submit(JACOBIAN, *problem(rng))) for _ in range(5)]
        await until_pending(batcher, 6)
        for task in gone:
            task.cancel()  # what a deadline or a disconnect does
        await until_pending(batcher, 1)
        slow.release.set()
        await first
        # Jobs run in order, so once a later one is answered, the cancelled ones had their turn.
        X, Y = problem(rng, A=2, F=3)
        later = await batcher.submit(JACOBIAN, X, Y)
        assert_close(later.arrays["J"][0], oracles.jacobian(X[0], Y[0]), 1e-9)
        assert slow.calls == [1, 1]
        await batcher.stop()

    asyncio.run(scenario())


def test_pending_bound_refuses_at_once(plain_engine: FakeEngine, rng: np.random.Generator) -> None:
    async def scenario() -> None:
        slow, batcher, first = await busy_batcher(plain_engine, rng, max_pending=2)
        second = asyncio.ensure_future(batcher.submit(JACOBIAN, *problem(rng)))
        await until_pending(batcher, 2)
        refused = batcher.submit(JACOBIAN, *problem(rng))
        with pytest.raises(Overloaded):
            refused.send(None)  # at its first step: refused without ever waiting
        slow.release.set()
        await asyncio.gather(first, second)
        await batcher.stop()

    asyncio.run(scenario())


def test_a_client_that_hangs_up_cancels_its_work() -> None:
    async def scenario() -> None:
        async def receive() -> dict:
            await asyncio.sleep(0.01)
            return {"type": "http.disconnect"}

        request = Request({"type": "http", "method": "POST", "headers": []}, receive)
        work = asyncio.ensure_future(asyncio.sleep(10))
        with pytest.raises(ClientDisconnected):
            await unless_disconnected(request, work)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert work.cancelled()

    asyncio.run(scenario())
