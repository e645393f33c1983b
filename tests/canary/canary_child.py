"""Child process of tests/canary/test_crash_canary.py: runs the cases it reads (JSON on stdin) through a
real engine and reports each on stdout. It prints ``start <id>`` before a case, so when a native
fault kills it, the parent knows which case did.

Inputs reach the engine as they do when served: big ones as views of a shared-memory segment laid
out by `app.ipc.shm.Layout` (TensorFlow takes those in place, through DLPack), small ones as read-only
views of a message's bytes (copied into tensors)."""

from __future__ import annotations

import json
import mmap
import sys

import numpy as np

import app  # noqa: F401  (sets TensorFlow's environment before the engine imports it)
from app.engine.derivatives import Engine, onednn_enabled
from app.ipc import shm, wire
from tests.support import oracles
from tests.support.helpers import run_policy

# The grid's operations (tests/canary/test_crash_canary.py) as the built-in model's calls.
OPS = {
    "jacobian": ("jacobian", ("X",)),
    "jacobian_xy": ("jacobian", ("X", "Y")),
    "jacobian_y": ("jacobian", ("Y",)),
    "hessian": ("hessian", ("X",)),
    "hvp": ("hvp", ("X",)),
    "vjp": ("vjp", ("X",)),
    "jvp": ("jvp", ("X",)),
}


def inputs(op: str, dtype: str, A: int, F: int, B: int, K: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(A * 100_003 + F * 7 + B)
    X = (rng.normal(size=(A, F)) * 0.1).astype(dtype)
    Y = rng.normal(size=(B, F)).astype(dtype)
    rows: tuple[np.ndarray, ...] = (np.broadcast_to(X, (B, A, F)), Y)
    if op == "hvp":
        rows += (np.broadcast_to(rng.normal(size=(A, F)).astype(dtype), (B, A, F)),)
    if op == "vjp":
        rows += (rng.normal(size=(B, K, A)).astype(dtype),)
    if op == "jvp":
        rows += (np.broadcast_to(rng.normal(size=(K, A, F)).astype(dtype), (B, K, A, F)),)
    return as_served(rows)


def as_served(rows: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    if sum(r.nbytes for r in rows) > shm.INLINE_MAX:
        layout = shm.Layout.of({str(i): r for i, r in enumerate(rows)})
        views = list(layout.views(mmap.mmap(-1, layout.nbytes)).values())
        for view, r in zip(views, rows, strict=True):
            view[...] = r
        return tuple(views)
    return tuple(wire.split(b"".join(np.ascontiguousarray(r).tobytes() for r in rows), wire.specs(rows)))


def expected(name: str, rows: tuple[np.ndarray, ...], b: int) -> np.ndarray:
    X, y = rows[0][b], rows[1][b]
    if name == "J":
        return oracles.jacobian(X, y)
    if name == "J_Y":
        return oracles.jacobian_y(X, y)
    if name == "H":  # every output's is the same (a broadcast): the first output's, and the last's
        H = oracles.hessian(X, y)
        return H[[0, -1]]
    if name == "HV":
        return oracles.hvp(X, y, rows[2][b])
    if name == "UJ":
        return np.stack([oracles.vjp(X, y, u) for u in rows[2][b]])
    if name == "JV":
        return np.stack([oracles.jvp(X, y, v) for v in rows[2][b]])
    return oracles.log_softmax(X, y)


def jacobian_error(X: np.ndarray, y: np.ndarray, got: np.ndarray) -> float:
    """`worst_error` of one state's J, an output's row at a time: the grid's biggest answers are
    J (up to 512 MiB), and whole float64 temporaries of them cost more than their computation."""
    worst = scale = 0.0
    for i, want in enumerate(oracles.jacobian_rows(X, y)):
        scale = max(scale, float(np.abs(want).max(initial=0.0)))
        worst = max(worst, float(np.abs(got[i].astype(np.float64) - want).max(initial=0.0)))
    return worst / max(scale, 1e-300)


def worst_error(op: str, rows: tuple[np.ndarray, ...], arrays: dict[str, np.ndarray]) -> float:
    """Largest error relative to the closed form's scale, over the first and last state."""
    worst = 0.0
    for b in {0, len(rows[1]) - 1}:
        for name, got in arrays.items():
            if name == "J":
                worst = max(worst, jacobian_error(rows[0][b], rows[1][b], got[b]))
                continue
            want = expected(name, rows, b)
            row = got[b][[0, -1]] if name == "H" else got[b]
            scale = max(float(np.abs(want).max(initial=0.0)), 1e-300)
            worst = max(worst, float(np.abs(row.astype(np.float64) - want).max(initial=0.0)) / scale)
    return worst


def main() -> None:
    cases = json.load(sys.stdin)
    print(json.dumps({"onednn": onednn_enabled()}), flush=True)
    engine = Engine(xla=True, xla_after=1, xla_max_shapes=len(cases))
    for case in cases:
        op, dtype, A, F, B, path = case["op"], case["dtype"], case["A"], case["F"], case["B"], case["path"]
        rows = inputs(op, dtype, A, F, B, case["K"]) if op != "crash" else ()
        print("start", case["id"], flush=True)
        if op == "crash":  # the harness's own test: a native fault, as the oneDNN bug raised
            import ctypes

            ctypes.string_at(0)
        if path == "xla":  # the first call serves from the graph and queues the compile
            run_policy(engine, *OPS[op], *rows)
            engine.wait_for_compiles()
        result = run_policy(engine, *OPS[op], *rows)
        print(json.dumps({"id": case["id"], "error": worst_error(op, rows, result.arrays)}), flush=True)


if __name__ == "__main__":
    main()
