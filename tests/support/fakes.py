"""Stand-ins for the engine, for tests without TensorFlow."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from app import ops
from tests.support import oracles


class FakeEngine:
    """W and J of log_softmax by the closed form, per row: what the batcher stacks and splits."""

    def run_rows(self, op: str, Xr: np.ndarray, Yr: np.ndarray, model: str) -> SimpleNamespace:
        assert op == ops.JACOBIAN and model == ops.BUILTIN
        W = np.stack([oracles.log_softmax(X, y) for X, y in zip(Xr, Yr, strict=True)])
        J = np.stack([oracles.jacobian(X, y) for X, y in zip(Xr, Yr, strict=True)])
        return SimpleNamespace(arrays={"W": W, "J": J}, device="/device:FAKE:0")
