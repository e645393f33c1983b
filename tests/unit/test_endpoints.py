"""app/endpoints.py: each original endpoint counts the numbers it sends as its formula says."""

from __future__ import annotations

import pytest

from app.endpoints import ENDPOINTS


@pytest.mark.parametrize(
    ("name", "wrt", "formula", "elements"),
    [
        ("jacobian", ("X",), "B·A²·F", 2 * 9 * 5),
        ("jacobian", ("Y",), "B·A·F", 2 * 3 * 5),
        ("jacobian", ("X", "Y"), "B·A²·F + B·A·F", 2 * 9 * 5 + 2 * 3 * 5),
        ("hessian", ("X",), "B·A³·F²", 2 * 27 * 25),
        ("hvp", ("X",), "B·A²·F", 2 * 9 * 5),
        ("vjp", ("X",), "B·K·A·F", 2 * 3 * 5),
        ("jvp", ("X",), "B·K·A", 2 * 3),
    ],
)
def test_the_formula_counts_the_derivatives(name: str, wrt: tuple[str, ...], formula: str, elements: int) -> None:
    e = ENDPOINTS[name]
    assert e.formula(wrt) == formula
    assert e.elements(wrt, B=2, A=3, F=5, K=1) == elements
