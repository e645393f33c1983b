"""Stand-ins for the engine, for tests without TensorFlow."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import numpy as np

from app.calls import Call
from tests.support import oracles


def jacobian_call(A: int = 2, F: int = 3, itemsize: int = 8) -> Call:
    """The built-in model's Jacobian in X, sized as the service sizes it for A×F rows."""
    row = (A + A * A * F) * itemsize
    return Call("jacobian", ("X",), ("W",), stack=True, dtype=f"float{8 * itemsize}", row_bytes=row, arrays=2)


JACOBIAN = jacobian_call()


class FakeEngine:
    """W and J of log_softmax by the closed form, per row: what the batcher stacks and splits."""

    def pin(self, model: str, call: Call) -> tuple[Call, None]:
        """Its one version."""
        return dataclasses.replace(call, version=1), None

    def run(self, call: Call, Xr: np.ndarray, Yr: np.ndarray, model: str, **_: Any) -> SimpleNamespace:
        assert call.op == "jacobian"
        W = np.stack([oracles.log_softmax(X, y) for X, y in zip(Xr, Yr, strict=True)])
        J = np.stack([oracles.jacobian(X, y) for X, y in zip(Xr, Yr, strict=True)])
        return SimpleNamespace(arrays={"W": W, "J": J}, device="/device:FAKE:0", version=1)
