"""app/service/budget.py and app/scheduling/ledger.py: the estimate, and admission by bytes in
the in-process batcher (a fake engine); through the app in tests/app/test_budget.py, and the
engine-process path under real load in tests/served/test_memory_budget.py."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from app.calls import Call
from app.catalog import BUILTIN_CARD
from app.endpoints import ENDPOINTS
from app.scheduling.batcher import Batcher
from app.scheduling.ledger import Ledger
from app.service import budget, front, seed
from tests.support import oracles
from tests.support.fakes import JACOBIAN, FakeEngine
from tests.support.oracles import assert_close

GiB = 1 << 30


def estimate(op: str, B: int, A: int, F: int, npz: bool) -> int:
    """The estimate of a float64 request to an original endpoint, the model's peaks measured."""
    card = replace(BUILTIN_CARD, peak_factors={"jacobian": 1.6, "hessian": 2.3, "hvp": 1.5})
    X, Y = np.zeros((A, F)), np.zeros((B, F))
    request = seed.from_arrays(X, Y, V=X if op == "hvp" else None)
    return budget.estimate(front.problem(card, ENDPOINTS[op], request), npz)


def test_estimate_grows_with_the_problem_and_json_costs_more_than_npz() -> None:
    for op in ("jacobian", "hessian", "hvp"):
        small = estimate(op, 1, 8, 32, npz=True)
        assert small < estimate(op, 1, 16, 64, npz=True) < estimate(op, 4, 16, 64, npz=True)
        assert estimate(op, 1, 16, 64, npz=True) < estimate(op, 1, 16, 64, npz=False)
    # At least the answer itself and TensorFlow's copy of it: 256×1024 float64 J is 512 MiB.
    assert estimate("jacobian", 1, 256, 1024, npz=True) > 2 * 512 * 2**20


def test_ledger_admits_anything_when_empty_and_otherwise_only_what_fits() -> None:
    ledger = Ledger(100)
    assert ledger.fits(500)  # alone, even an over-budget claim runs: nothing else can free memory
    ledger.claim(60)
    assert ledger.fits(40) and not ledger.fits(41)
    ledger.release(60)
    assert ledger.claimed == 0 and ledger.fits(100)


@pytest.fixture
def plain_engine() -> FakeEngine:
    return FakeEngine()


def test_requests_whose_claims_do_not_fit_together_run_one_after_the_other(
    plain_engine: FakeEngine, rng: np.random.Generator
) -> None:
    calls: list[tuple[int, int]] = []  # (rows, bytes claimed while running)

    async def scenario() -> None:
        batcher: Batcher

        def run(call: Call, *rows: np.ndarray, model: str, **options: Any):
            calls.append((len(rows[0]), batcher.ledger.claimed))
            return plain_engine.run(call, *rows, model=model)

        batcher = Batcher(run, max_batch_rows=64, max_pending=64, memory_budget=100)
        batcher.start()
        X, Y = rng.normal(size=(1, 3, 4)), rng.normal(size=(1, 4))
        jobs = [asyncio.ensure_future(batcher.submit(JACOBIAN, X, Y, claim=60)) for _ in range(3)]
        for job in jobs:
            done = await job
            assert_close(done.arrays["J"][0], oracles.jacobian(X[0], Y[0]), 1e-9)
            assert batcher.ledger.claimed == 60  # held until released, so the next waits
            done.release()
        assert batcher.ledger.claimed == 0
        await batcher.stop()

    asyncio.run(scenario())
    # Small same-shape requests would share one call; their claims kept them apart.
    assert calls == [(1, 60), (1, 60), (1, 60)]


def test_a_cancelled_request_gives_back_its_claim(plain_engine: FakeEngine, rng: np.random.Generator) -> None:
    async def scenario() -> None:
        batcher = Batcher(plain_engine.run, max_batch_rows=64, max_pending=64, memory_budget=100)
        batcher.start()
        X, Y = rng.normal(size=(1, 3, 4)), rng.normal(size=(1, 4))
        first = await batcher.submit(JACOBIAN, X, Y, claim=60)
        waiting = asyncio.ensure_future(batcher.submit(JACOBIAN, X, Y, claim=60))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # no room beside the first
        waiting.cancel()
        first.release()
        await asyncio.sleep(0.05)
        assert batcher.ledger.claimed == 0
        await batcher.stop()

    asyncio.run(scenario())
