"""Child process of tests/test_crash_canary.py: runs the cases it reads (JSON on stdin) through a
real engine and reports each on stdout. It prints ``start <id>`` before a case, so when a native
fault kills it, the parent knows which case did."""

from __future__ import annotations

import json
import sys

import numpy as np

import app  # noqa: F401  (sets TensorFlow's environment before the engine imports it)
from app import ops
from app.engine import Engine, onednn_enabled
from tests.support import oracles


def inputs(op: str, dtype: str, A: int, F: int, B: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(A * 100_003 + F * 7 + B)
    X = (rng.normal(size=(A, F)) * 0.1).astype(dtype)
    Y = rng.normal(size=(B, F)).astype(dtype)
    rows = (np.broadcast_to(X, (B, A, F)), Y)
    if op == ops.HVP:
        rows += (np.broadcast_to(rng.normal(size=(A, F)).astype(dtype), (B, A, F)),)
    return rows


def expected(op: str, name: str, X: np.ndarray, y: np.ndarray, V: np.ndarray | None) -> np.ndarray:
    if name == "J":
        return oracles.jacobian(X, y)
    if name == "J_Y":
        return oracles.jacobian_y(X, y)
    if name == "H_lse":
        return oracles.hessian(X, y)[0]
    if name == "HV":
        assert V is not None
        return oracles.hvp(X, y, V)
    return oracles.log_softmax(X, y)


def worst_error(op: str, rows: tuple[np.ndarray, ...], arrays: dict[str, np.ndarray]) -> float:
    """Largest error relative to the closed form's scale, over the first and last state."""
    worst = 0.0
    for b in {0, len(rows[1]) - 1}:
        X, y = rows[0][b], rows[1][b]
        V = rows[2][b] if op == ops.HVP else None
        for name, got in arrays.items():
            want = expected(op, name, X, y, V)
            scale = max(float(np.abs(want).max(initial=0.0)), 1e-300)
            worst = max(worst, float(np.abs(got[b].astype(np.float64) - want).max(initial=0.0)) / scale)
    return worst


def main() -> None:
    cases = json.load(sys.stdin)
    print(json.dumps({"onednn": onednn_enabled()}), flush=True)
    engine = Engine(xla=True, xla_after=1, xla_max_shapes=len(cases))
    for case in cases:
        op, dtype, A, F, B, path = case["op"], case["dtype"], case["A"], case["F"], case["B"], case["path"]
        rows = inputs(op, dtype, A, F, B) if op != "crash" else ()
        print("start", case["id"], flush=True)
        if op == "crash":  # the harness's own test: a native fault, as the oneDNN bug raised
            import ctypes

            ctypes.string_at(0)
        if path == "xla":  # the first call serves from the graph and queues the compile
            engine.run_rows(op, *rows)
            engine.wait_for_compiles()
        result = engine.run_rows(op, *rows)
        print(json.dumps({"id": case["id"], "error": worst_error(op, rows, result.arrays)}), flush=True)


if __name__ == "__main__":
    main()
