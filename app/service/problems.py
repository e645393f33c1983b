"""A validated problem — X, the states Y, and optionally a direction V — built from JSON lists
or npz arrays, with the checks both transports share. No web imports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from app import ops
from app.errors import InvalidInput

FLOAT_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Problem:
    """X: (A, F); Y: (B, F) — `batched` says whether the client sent B×F or a single F vector."""

    X: np.ndarray
    Y: np.ndarray
    batched: bool
    V: np.ndarray | None = None
    wrt: tuple[str, ...] = ("X",)
    U: np.ndarray | None = None  # cotangents: (B, K, A) for /vjp
    K: int | None = None  # products per state; None when the client sent no K axis
    sum_states: bool = False

    @property
    def dtype(self) -> str:
        return str(self.X.dtype)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(B, A, F)."""
        return self.Y.shape[0], self.X.shape[0], self.X.shape[1]


def _fail(loc: Sequence[str | int], msg: str) -> InvalidInput:
    return InvalidInput(msg, [{"loc": list(loc), "msg": msg}])


def _rectangular(rows: list[list[float]], name: str) -> None:
    if not rows:
        raise _fail([name], f"{name} is empty; it needs at least one row")
    width = len(rows[0])
    for r, row in enumerate(rows):
        if len(row) != width:
            raise _fail(
                [name, r],
                f"{name} is ragged: row {r} has {len(row)} entries but row 0 has {width}; "
                f"every row of {name} must have the same length",
            )


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
    if not np.isfinite(wide).all():
        raise _fail([name], f"{name} contains NaN or infinite values; all entries must be finite")
    with np.errstate(over="ignore"):  # reported below, with advice
        arr = wide.astype(dtype)
    if not np.isfinite(arr).all():
        raise _fail([name], f"{name} has entries too large for {dtype}; use dtype float64")
    return arr


def from_lists(
    X: list[list[float]],
    Y: list[float] | list[list[float]],
    dtype: str,
    V: list[list[float]] | None = None,
    wrt: Sequence[str] = ("X",),
) -> Problem:
    """Build a problem from parsed JSON lists (types already checked by pydantic)."""
    _rectangular(X, "X")
    batched = bool(Y) and isinstance(Y[0], list)
    if batched:
        _rectangular(Y, "Y")  # type: ignore[arg-type]
    if V is not None:
        _rectangular(V, "V")
    return from_arrays(
        finite_as(X, "X", dtype),
        finite_as(Y, "Y", dtype),
        None if V is None else finite_as(V, "V", dtype),
        wrt,
    )


def from_arrays(X: np.ndarray, Y: np.ndarray, V: np.ndarray | None = None, wrt: Sequence[str] = ("X",)) -> Problem:
    """Check ranks and shapes of same-dtype float arrays: X (A, F), Y (F,) or (B, F), V (A, F)."""
    if X.ndim != 2:
        raise _fail(["X"], f"X must be a 2-D matrix (A×F) but has {X.ndim} dimensions")
    A, F = X.shape
    if A == 0 or F == 0:
        raise _fail(["X"], f"X is {A}×{F}; it needs at least one row and one column")
    if Y.ndim not in (1, 2):
        raise _fail(["Y"], f"Y must be a vector (F) or a batch of vectors (B×F) but has {Y.ndim} dimensions")
    batched = Y.ndim == 2
    if batched and Y.shape[0] == 0:
        raise _fail(["Y"], "Y is an empty batch; it needs at least one state")
    if Y.shape[-1] != F:
        what = "each state in Y has" if batched else "Y has"
        raise _fail(
            ["Y"],
            f"{what} {Y.shape[-1]} entries but X has {F} columns; Y must have one entry per column of X",
        )
    if V is not None and V.shape != X.shape:
        raise _fail(["V"], f"V has shape {list(V.shape)} but X has shape {[A, F]}; V must be shaped like X")
    return Problem(X=X, Y=Y if batched else Y[None, :], batched=batched, V=V, wrt=tuple(dict.fromkeys(wrt)))


def with_cotangents(p: Problem, U: np.ndarray, sum_states: bool = False) -> Problem:
    """A /vjp problem: U shaped like W — A or K×A for one state, B×A or K×B×A for a batch."""
    B, A, _ = p.shape
    like_w = (B, A) if p.batched else (A,)
    if U.ndim == len(like_w):
        K, Ur = None, U.reshape(B, 1, A) if U.shape == like_w else None
    elif U.ndim == len(like_w) + 1:
        K = U.shape[0]
        Ur = np.moveaxis(U.reshape(K, B, A), 0, 1) if U.shape[1:] == like_w else None
    else:
        K, Ur = None, None
    what = "B×A (one row per state)" if p.batched else "A"
    if Ur is None:
        raise _fail(
            ["U"],
            f"U has shape {list(U.shape)} but must be shaped like W, {what} = {list(like_w)}, "
            f"optionally with a leading K axis for K cotangents",
        )
    if K == 0:
        raise _fail(["U"], "U has K = 0 cotangents; send at least one")
    if sum_states and not p.batched:
        raise _fail(["sum_states"], "sum_states needs a batch of states (Y as B×F); this request has one state")
    return replace(p, U=np.ascontiguousarray(Ur), K=K, sum_states=sum_states)


def with_tangents(p: Problem, V: np.ndarray) -> Problem:
    """A /jvp problem: V shaped like X (A×F), or K×A×F for K tangents."""
    A, F = p.X.shape
    if V.ndim == 2 and V.shape == (A, F):
        return replace(p, V=V[None], K=None)
    if V.ndim == 3 and V.shape[1:] == (A, F):
        if V.shape[0] == 0:
            raise _fail(["V"], "V has K = 0 tangents; send at least one")
        return replace(p, V=V, K=V.shape[0])
    raise _fail(
        ["V"],
        f"V has shape {list(V.shape)} but must be shaped like X, {[A, F]}, optionally with a leading K axis "
        "for K tangents",
    )


def from_named(
    arrays: dict[str, np.ndarray],
    dtype: str | None,
    products: str | None = None,
    sum_states: bool = False,
    wrt: Sequence[str] = ("X",),
) -> Problem:
    """A problem from float arrays named as in the API (X, Y, and V or U), whatever the transport
    (npz, the Open Inference Protocol). The computation's dtype is `dtype` if given, else the
    widest of the arrays'."""
    wide = dtype or str(np.result_type(*arrays.values()))
    cast = {name: finite_as(a, name, wide) for name, a in arrays.items()}
    if products == ops.VJP:
        return with_cotangents(from_arrays(cast["X"], cast["Y"]), cast["U"], sum_states)
    if products == ops.JVP:
        return with_tangents(from_arrays(cast["X"], cast["Y"]), cast["V"])
    return from_arrays(cast["X"], cast["Y"], cast.get("V"), wrt)
