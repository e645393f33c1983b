"""A request's arrays checked against a model's card before any work: numbers of the computation's
dtype, finite, shaped as the card says, and agreeing on the sizes it names. No web imports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.catalog import Tensor
from app.errors import InvalidInput

FLOAT_DTYPES = ("float32", "float64")  # what a request may compute in, where it chooses


def _fail(loc: Sequence[str | int], msg: str) -> InvalidInput:
    return InvalidInput(msg, [{"loc": list(loc), "msg": msg}])


def all_finite(a: np.ndarray) -> bool:
    """Whether every entry is finite. NaN and ±inf propagate through addition, so a finite sum
    proves it at ~2/3 the cost of `np.isfinite(a).all()`, which fills a boolean array first; a sum
    that overflowed is decided entry by entry."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(a, axis=None)
    return bool(np.isfinite(total)) or bool(np.isfinite(a).all())


def finite_as(values: object, name: str, dtype: str) -> np.ndarray:
    """`values` as a `dtype` array, refusing NaN/inf and entries that overflow `dtype`."""
    if isinstance(values, np.ndarray) and values.dtype == dtype:  # an npz member already right: no copies
        if not all_finite(values):
            raise _fail([name], f"{name} contains NaN or infinite values; all entries must be finite")
        return values
    try:
        wide = np.asarray(values, dtype=np.float64)
    except ValueError:  # nested lists of unequal lengths
        raise _fail([name], f"{name} is ragged: every row must have the same length") from None
    with np.errstate(over="ignore"):  # reported below, with advice
        arr = wide.astype(dtype, copy=False)
    if all_finite(arr):  # the usual case: one check says both below
        return arr
    if not np.isfinite(wide).all():
        raise _fail([name], f"{name} contains NaN or infinite values; all entries must be finite")
    raise _fail([name], f"{name} has entries too large for {dtype}; use dtype float64")


def shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("any" if d is None else str(d) for d in shape) + "]"


def tensor_text(t: Tensor) -> str:
    return f"{t.name} ({t.dtype}, shape {shape_text(t.shape)})"


def array_for(t: Tensor, value: Any, loc: Sequence[str | int]) -> np.ndarray:
    """A JSON value or npz member as the signature's dtype: a floating input takes numbers (cast,
    checked finite), an integer input integers only."""
    what = ".".join(map(str, loc))
    try:
        a = value if isinstance(value, np.ndarray) else np.asarray(value)
    except ValueError:
        raise _fail(loc, f"{what} is ragged: every row must have the same length") from None
    if a.dtype == object:
        raise _fail(loc, f"{what} is ragged: every row must have the same length")
    if a.dtype.kind not in "iuf" and a.size:
        raise _fail(
            loc,
            f"{what} must hold numbers ({t.name} is {t.dtype}), not {'booleans' if a.dtype.kind == 'b' else 'strings'}",
        )
    if t.floating:
        return finite_as(a, what, t.dtype)
    if a.dtype.kind not in "iu" and a.size:
        raise _fail(loc, f"{what} must hold integers: {t.name} is {t.dtype}")
    a = a.astype(np.int64) if a.size == 0 else a
    info = np.iinfo(t.dtype)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise _fail(loc, f"{what} has entries outside {t.dtype}'s range [{info.min}, {info.max}]")
    return a.astype(t.dtype, copy=False)


def check_shape(t: Tensor, a: np.ndarray, loc: Sequence[str | int], lead: int = 0, one: bool = False) -> None:
    """`a` shaped as `t` says (after `lead` axes of the client's, such as K; without the batch
    axis for `one` example)."""
    shape, want = a.shape[lead:], t.shape[1:] if one else t.shape
    ok = len(shape) == len(want) and all(d is None or d == s for d, s in zip(want, shape, strict=True))
    if not ok:
        raise _fail(
            loc,
            f"{'.'.join(map(str, loc))} has shape {list(a.shape)} but {t.name} must be shaped "
            f"{shape_text(want)}" + (" with a leading K axis" if lead else ""),
        )


class Sizes:
    """The sizes a card names (A, F, B), bound from the first array having each and checked
    against every other: the built-in's X and Y agree on F, its cotangents on A."""

    def __init__(self) -> None:
        self.bound: dict[str, tuple[int, str]] = {}

    def bind(self, t: Tensor, a: np.ndarray, loc: Sequence[str | int], lead: int = 0, one: bool = False) -> None:
        symbols = t.symbols[1:] if one else t.symbols
        for axis, (symbol, size) in enumerate(zip(symbols, a.shape[lead:], strict=False)):
            if not symbol:
                continue
            seen = self.bound.setdefault(symbol, (size, ".".join(map(str, loc))))
            if seen[0] != size:
                raise _fail(
                    loc,
                    f"{'.'.join(map(str, loc))} has shape {list(a.shape)}: its size {symbol} (axis {axis + lead}) "
                    f"is {size} but {seen[1]}'s is {seen[0]}",
                )
