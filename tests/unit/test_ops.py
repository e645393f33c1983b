"""app/ops.py: the operation contract is what the engine returns and what the service serves."""

from __future__ import annotations

import pytest

from app import ops


@pytest.mark.parametrize(
    "op,formula,count",
    [
        (ops.JACOBIAN, "B·A²·F", 2 * 9 * 5),
        (ops.JACOBIAN_Y, "B·A·F", 2 * 3 * 5),
        (ops.JACOBIAN_XY, "B·A²·F + B·A·F", 2 * 9 * 5 + 2 * 3 * 5),
        (ops.HESSIAN, "B·A³·F²", 2 * 27 * 25),
        (ops.HVP, "B·A²·F", 2 * 9 * 5),
        (ops.VJP, "B·K·A·F", 2 * 3 * 5),
        (ops.JVP, "B·K·A", 2 * 3),
    ],
)
def test_counts_and_their_formulas_agree(op: str, formula: str, count: int) -> None:
    contract = ops.OPERATIONS[op]
    assert contract.formula() == formula and contract.derivative_elements(2, 3, 5) == count
