"""app/service/outputs.py: the element limits per encoding, and no non-finite number ever sent."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import NonFiniteResult, TooLarge
from app.service.outputs import Encoding, check_output_size, ensure_finite


def test_every_non_finite_output_is_named() -> None:
    W, J = np.zeros(3), np.ones((3, 3, 4))
    ensure_finite({"W": W, "J": J})  # all finite: nothing raised
    J[2, 1, 3] = np.inf
    W[0] = np.nan
    with pytest.raises(NonFiniteResult, match=r"\(W, J\)"):
        ensure_finite({"W": W, "J": J})


def test_finite_outputs_whose_sum_overflows_are_sent() -> None:
    big = np.full(8, np.finfo(np.float32).max, np.float32)
    ensure_finite({"J": big})


def test_the_limit_and_the_advice_follow_the_encoding() -> None:
    json = Encoding.chosen(False, 5000, 1000, "Accept: application/x-npz")
    binary = Encoding.chosen(True, 5000, 1000, "Accept: application/x-npz")
    with pytest.raises(TooLarge, match=r"1,000 for JSON responses.*ask for npz") as caught:
        check_output_size("Jacobian", 1280, "B·A²·F", json, "")
    assert "5,000" in str(caught.value)
    check_output_size("Jacobian", 1280, "B·A²·F", binary, "")
    v2 = Encoding.chosen(True, 1000, 100, "binary_data", "binary data")
    with pytest.raises(TooLarge, match="for binary data responses"):
        check_output_size("Jacobian", 1280, "B·A²·F", v2, "")
