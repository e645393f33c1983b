"""The memory budget's estimate of a request: its peak bytes while it runs, from TensorFlow's peak
for the model's operation, measured on its first use (`Card.peak_factors`), and what a request
claims of the budget. No TensorFlow, no web imports."""

from __future__ import annotations

from app.service.problem import Problem

JSON_BYTES_PER_NUMBER = 26


OVERHEAD = 1 << 20


def estimate(p: Problem, npz: bool) -> int:
    """Peak bytes while it runs: the inputs (parsed, stacked, TensorFlow's copy), TensorFlow's
    peak (the multiple measured on the operation's first use), the answer, and its encoding."""
    n = p.n_rows
    out = p.call.output_bytes(n)
    given = sum(a.nbytes for a in p.rows)
    per_row, fixed = p.elements
    encoded = 0 if npz else (fixed + n * per_row) * JSON_BYTES_PER_NUMBER
    measured = p.card.peak_factors.get(p.call.op)
    factor = UNMEASURED if measured is None else max(1.0, MARGIN * measured)
    return 4 * given + int(factor * (out + given)) + out + encoded + OVERHEAD


# TensorFlow's peak, a multiple of a call's inputs and outputs: measured per model and operation
# on its first use (`Card.peak_factors`, from the allocator's statistics, which read below the
# process's memory: hence the margin). Until then, at least the inputs and answer; the claim is the
# whole budget (`claim`).
MARGIN = 1.5


UNMEASURED = 1.0


def claim(p: Problem, estimated: int, budget: int) -> int:
    """What a request holds of the memory budget while it runs: its estimate, or the whole budget
    for an operation not measured yet (its first request runs alone: factors of 2 to 70 were
    measured here, too wide apart to guess one)."""
    return estimated if p.call.op in p.card.peak_factors else max(estimated, budget)
