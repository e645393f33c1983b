"""app/service/front.py and app/service/dataplane.py without TensorFlow: an original endpoint's
request renamed into the built-in model's call, size checks and memory claims before any work in
the endpoints' own words, and the engine's rows shaped and renamed into the answer (a fake
engine returns closed forms, under the engine's names)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from app import calls
from app.calls import Call, Computed
from app.catalog import BUILTIN_CARD
from app.config import Settings
from app.endpoints import ENDPOINTS
from app.errors import OverMemoryBudget, TooLarge
from app.service import budget, front
from app.service.dataplane import Service
from app.service.outputs import Encoding
from app.service.seed import from_arrays
from tests.support import oracles

CARD = replace(BUILTIN_CARD, peak_factors={"jacobian": 1.6, "hessian": 2.3})  # measured: claims are estimates


class ClosedForms:
    """Answers submits with the closed forms, under the engine's names; records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Call, int]] = []
        self.released = 0

    async def submit(
        self, call: Call, *rows: np.ndarray, claim: int = 0, model: str = "", claim_after: int = 0
    ) -> Computed:
        self.calls.append((call, claim))
        pairs = list(zip(rows[0], rows[1], strict=True))
        arrays: dict[str, Any] = {"outputs|W": np.stack([oracles.log_softmax(X, y) for X, y in pairs])}
        if call.op == calls.JACOBIAN and "X" in call.wrt:
            arrays["jacobian|W|X"] = np.stack([oracles.jacobian(X, y) for X, y in pairs])
        if call.op == calls.JACOBIAN and "Y" in call.wrt:
            arrays["jacobian|W|Y"] = np.stack([oracles.jacobian_y(X, y) for X, y in pairs])
        if call.op == calls.HESSIAN:
            arrays["hessian|W|X"] = np.stack([oracles.hessian(X, y) for X, y in pairs])
        return Computed(arrays, "/device:CPU:0", self._release)

    def _release(self) -> None:
        self.released += 1


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _encoding(settings: Settings, npz: bool) -> Encoding:
    return Encoding.chosen(npz, settings.max_output_elements, settings.max_json_output_elements, "Accept: npz")


def test_both_jacobians_are_counted_and_the_413_says_how(rng: np.random.Generator) -> None:
    engine = ClosedForms()
    settings = Settings(max_json_output_elements=99, max_output_elements=1000)
    service = Service(settings, engine)
    p = from_arrays(rng.normal(size=(4, 5)), rng.normal(size=5), wrt=("Y", "X"))  # 80 + 20 numbers
    e = ENDPOINTS["jacobian"]
    with pytest.raises(TooLarge) as err:
        _run(front.serve(service, CARD, e, p, _encoding(settings, npz=False)))
    assert "100 elements (B·A²·F + B·A·F with B=1, A=4, F=5)" in err.value.message
    assert "ask for npz (Accept: npz), whose limit is 1,000" in err.value.message and engine.calls == []
    answer = _run(front.serve(service, CARD, e, p, _encoding(settings, npz=True)))
    assert list(answer.arrays) == ["W", "J", "J_Y"]  # the endpoint's order, whatever wrt's
    assert answer.arrays["J"].shape == (4, 4, 5) and answer.arrays["J_Y"].shape == (4, 5)
    assert answer.meta == {"dtype": "float64", "device": "/device:CPU:0"}
    ((call, _claim),) = engine.calls
    assert (call.op, call.wrt, call.of, call.dtype) == ("jacobian", ("X", "Y"), ("W",), "float64")


def test_a_request_over_the_memory_budget_never_reaches_the_engine(rng: np.random.Generator) -> None:
    engine = ClosedForms()
    settings = Settings(memory_budget_bytes=1 << 20)
    service = Service(settings, engine)
    p = from_arrays(rng.normal(size=(64, 256)), rng.normal(size=256))  # J alone is 8 MiB
    with pytest.raises(OverMemoryBudget, match="JACOBIAN_MEMORY_BUDGET_BYTES"):
        _run(front.serve(service, CARD, ENDPOINTS["jacobian"], p, _encoding(settings, npz=True)))
    assert engine.calls == []


def test_the_claim_sent_is_the_estimate_and_the_hessian_is_served_whole(rng: np.random.Generator) -> None:
    engine = ClosedForms()
    settings = Settings()
    service = Service(settings, engine)
    X, y = rng.normal(size=(3, 4)), rng.normal(size=4)
    request = from_arrays(X, y)
    e = ENDPOINTS["hessian"]
    answer = _run(front.serve(service, CARD, e, request, _encoding(settings, npz=True)))
    ((_call, claim),) = engine.calls
    assert claim == budget.estimate(front.problem(CARD, e, request), npz=True)
    np.testing.assert_allclose(answer.arrays["H"], oracles.hessian(X, y), rtol=1e-12)
    answer.release()
    assert engine.released == 1


def test_an_operation_not_measured_yet_claims_the_whole_budget(rng: np.random.Generator) -> None:
    engine = ClosedForms()
    settings = Settings(memory_budget_bytes=1 << 30)
    request = from_arrays(rng.normal(size=(3, 4)), rng.normal(size=4))
    _run(
        front.serve(Service(settings, engine), BUILTIN_CARD, ENDPOINTS["jacobian"], request, _encoding(settings, True))
    )
    assert engine.calls[0][1] == 1 << 30
