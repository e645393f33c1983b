"""app/service/seed.py and app/service/arrays.py: a request is valid by construction, and each
refusal says where and why."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import InvalidInput
from app.service.arrays import all_finite, finite_as
from app.service.seed import from_arrays, from_lists


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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_finds_one_bad_entry_anywhere(dtype: str, bad: float) -> None:
    a = np.ones(1001, dtype)
    assert all_finite(a)
    for at in (0, 500, 1000):
        b = a.copy()
        b[at] = bad
        assert not all_finite(b)


def test_all_finite_is_not_fooled_by_a_sum_that_overflows() -> None:
    big = np.full(10, np.finfo(np.float32).max / 2, np.float32)  # finite entries, infinite sum
    assert all_finite(big)
    assert not all_finite(np.array([np.inf, -np.inf, 1.0]))  # inf − inf: the sum is NaN
