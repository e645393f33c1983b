"""app/engine/xla.py without TensorFlow: which shapes are compiled (asked for `after` times, rows
padded to a power of two, at most `max_shapes`, never an answer over the cap), and that a compiled
shape is served compiled."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.calls import Call
from app.engine.xla import MAX_OUTPUT_BYTES, Xla
from tests.support.fakes import jacobian_call


class Traces:
    """A stand-in for the traced calls: records which (call, compiled) ran on which rows."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, bool, int]] = []

    def __call__(self, model: str, call: Call, jit_compile: bool) -> Any:
        def run(*rows: np.ndarray) -> dict[str, np.ndarray]:
            self.ran.append((call.op, jit_compile, len(rows[0])))
            return {"W": rows[0].sum(axis=-1)}

        return run


def rows(n: int, A: int = 2, F: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return np.ones((n, A, F)), np.ones((n, F))


def test_a_shape_is_compiled_on_its_after_th_request_rows_padded_and_served_compiled_then() -> None:
    traces = Traces()
    xla = Xla(after=2, max_shapes=2, function=traces)
    call = jacobian_call()
    assert xla.run("policy", call, rows(3)) is None  # once: not yet
    assert xla.run("policy", call, rows(4)) is None  # 3 and 4 rows are one padded shape: compiles
    xla.wait()
    assert traces.ran == [("jacobian", True, 4)] and len(xla.compiled) == 1
    out = xla.run("policy", call, rows(3))
    assert out is not None and out["W"].shape == (4, 2)  # padded: the caller cuts the row back
    assert traces.ran[-1] == ("jacobian", True, 4)


def test_at_most_max_shapes_are_compiled_and_never_an_answer_over_the_cap() -> None:
    traces = Traces()
    xla = Xla(after=1, max_shapes=2, function=traces)
    for F in range(1, 5):
        xla.run("policy", jacobian_call(F=F), rows(1, F=F))
    xla.wait()
    assert len(xla.compiled) == 2
    big = jacobian_call(A=64, F=520)  # 64·64·520 float64: 17 MB
    assert big.output_bytes(1) > MAX_OUTPUT_BYTES
    fresh = Xla(after=1, max_shapes=2, function=traces)
    for _ in range(3):
        assert fresh.run("policy", big, rows(1, 64, 520)) is None
    fresh.wait()
    assert fresh.compiled == set()
