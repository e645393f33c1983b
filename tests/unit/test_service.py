"""app/service/dataplane.py without TensorFlow: size checks and memory claims before any work, and the
shaping of the engine's rows into the answer (a fake engine returns closed forms)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from app import ops
from app.config import Settings
from app.endpoints import ENDPOINTS
from app.errors import OverMemoryBudget, TooLarge
from app.ops import Computed
from app.service import budget
from app.service.dataplane import Service
from app.service.outputs import Encoding
from app.service.problems import from_arrays
from tests.support import oracles


class ClosedForms:
    """Answers submits with the closed forms, the engine's shapes; records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.released = 0

    async def submit(self, op: str, *rows: np.ndarray, claim: int = 0, model: str = ops.BUILTIN) -> Computed:
        self.calls.append((op, claim))
        Xr, Yr = rows[0], rows[1]
        arrays: dict[str, Any] = {"W": np.stack([oracles.log_softmax(X, y) for X, y in zip(Xr, Yr, strict=True)])}
        if op in (ops.JACOBIAN, ops.JACOBIAN_XY):
            arrays["J"] = np.stack([oracles.jacobian(X, y) for X, y in zip(Xr, Yr, strict=True)])
        if op in (ops.JACOBIAN_Y, ops.JACOBIAN_XY):
            arrays["J_Y"] = np.stack([oracles.jacobian_y(X, y) for X, y in zip(Xr, Yr, strict=True)])
        if op == ops.HESSIAN:
            arrays["H_lse"] = np.stack([oracles.hessian(X, y)[0] for X, y in zip(Xr, Yr, strict=True)])
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
    p = from_arrays(rng.normal(size=(4, 5)), rng.normal(size=5), wrt=("X", "Y"))  # 80 + 20 numbers
    with pytest.raises(TooLarge) as err:
        _run(service.serve(ENDPOINTS["jacobian"], p, _encoding(settings, npz=False)))
    assert "100 elements (B·A²·F + B·A·F with B=1, A=4, F=5)" in err.value.message
    assert "ask for npz (Accept: npz), whose limit is 1,000" in err.value.message and engine.calls == []
    answer = _run(service.serve(ENDPOINTS["jacobian"], p, _encoding(settings, npz=True)))
    assert answer.arrays["J"].shape == (4, 4, 5) and answer.arrays["J_Y"].shape == (4, 5)


def test_a_request_over_the_memory_budget_never_reaches_the_engine(rng: np.random.Generator) -> None:
    engine = ClosedForms()
    settings = Settings(memory_budget_bytes=1 << 20)
    service = Service(settings, engine)
    p = from_arrays(rng.normal(size=(64, 256)), rng.normal(size=256))  # J alone is 8 MiB
    with pytest.raises(OverMemoryBudget, match="JACOBIAN_MEMORY_BUDGET_BYTES"):
        _run(service.serve(ENDPOINTS["jacobian"], p, _encoding(settings, npz=True)))
    assert engine.calls == []


def test_the_claim_sent_is_the_estimate_and_the_hessian_is_served_whole(rng: np.random.Generator) -> None:
    engine = ClosedForms()
    settings = Settings()
    service = Service(settings, engine)
    X, y = rng.normal(size=(3, 4)), rng.normal(size=4)
    answer = _run(service.serve(ENDPOINTS["hessian"], from_arrays(X, y), _encoding(settings, npz=True)))
    assert engine.calls == [(ops.HESSIAN, budget.estimate(ops.HESSIAN, 1, 3, 4, 8, True))]
    np.testing.assert_allclose(answer.arrays["H"], oracles.hessian(X, y), rtol=1e-12)
    answer.release()
    assert engine.released == 1
