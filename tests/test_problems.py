"""app/problems.py: a Problem is valid by construction, and each refusal says where and why."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import InvalidInput
from app.problems import finite_as, from_arrays, from_lists


def test_one_state_becomes_a_batch_of_one_and_remembers_it() -> None:
    p = from_lists([[1.0, 2.0], [3.0, 4.0]], [0.5, 0.25], "float64")
    assert p.shape == (1, 2, 2) and not p.batched and p.dtype == "float64"
    q = from_lists([[1.0, 2.0]], [[0.5, 0.25], [1.0, 1.0]], "float32", wrt=["Y", "X", "Y"])
    assert q.shape == (2, 1, 2) and q.batched and q.wrt == ("Y", "X")


@pytest.mark.parametrize(
    "X,Y,V,loc,words",
    [
        ([[1.0, 2.0], [3.0]], [1.0, 1.0], None, ["X", 1], "ragged"),
        ([], [1.0], None, ["X"], "empty"),
        ([[1.0, 2.0]], [1.0, 2.0, 3.0], None, ["Y"], "one entry per column"),
        ([[1.0, 2.0]], [[1.0, 2.0], [1.0]], None, ["Y", 1], "ragged"),
        ([[1.0, 2.0]], [1.0, 2.0], [[1.0]], ["V"], "shaped like X"),
    ],
)
def test_bad_shapes_name_the_place_and_the_fix(X, Y, V, loc, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as err:
        from_lists(X, Y, "float64", V=V)
    assert err.value.details[0]["loc"] == loc and words in err.value.message


def test_non_finite_and_overflowing_values_are_refused() -> None:
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        finite_as([[1.0, float("nan")]], "X", "float64")
    with pytest.raises(InvalidInput, match="too large for float32"):
        finite_as([[1e300]], "X", "float32")


def test_arrays_of_the_wrong_rank_are_refused() -> None:
    with pytest.raises(InvalidInput, match="2-D"):
        from_arrays(np.ones(3), np.ones(3))
    with pytest.raises(InvalidInput, match="empty batch"):
        from_arrays(np.ones((2, 3)), np.ones((0, 3)))
