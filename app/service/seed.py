"""A request to the original endpoints (`app.endpoints`), validated: X, the states Y, and a
direction V or cotangents U, from JSON lists, npz arrays or V2 tensors, with the checks and
messages every transport shares. `app.service.front` renames it into the built-in model's call.
No web imports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from pydantic import BaseModel

from app.calls import JVP, VJP
from app.errors import InvalidInput
from app.service.arrays import finite_as
from app.service.codec import validated
from app.service.npz import read


@dataclass(frozen=True)
class PolicyRequest:
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


def from_lists(
    X: list[list[float]],
    Y: list[float] | list[list[float]],
    dtype: str,
    V: list[list[float]] | None = None,
    wrt: Sequence[str] = ("X",),
) -> PolicyRequest:
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


def from_arrays(
    X: np.ndarray, Y: np.ndarray, V: np.ndarray | None = None, wrt: Sequence[str] = ("X",)
) -> PolicyRequest:
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
    return PolicyRequest(X=X, Y=Y if batched else Y[None, :], batched=batched, V=V, wrt=tuple(dict.fromkeys(wrt)))


def with_cotangents(p: PolicyRequest, U: np.ndarray, sum_states: bool = False) -> PolicyRequest:
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


def with_tangents(p: PolicyRequest, V: np.ndarray) -> PolicyRequest:
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
) -> PolicyRequest:
    """A problem from float arrays named as in the API (X, Y, and V or U), whatever the transport
    (npz, the Open Inference Protocol). The computation's dtype is `dtype` if given, else the
    widest of the arrays'."""
    wide = dtype or str(np.result_type(*arrays.values()))
    cast = {name: finite_as(a, name, wide) for name, a in arrays.items()}
    if products == VJP:
        return with_cotangents(from_arrays(cast["X"], cast["Y"]), cast["U"], sum_states)
    if products == JVP:
        return with_tangents(from_arrays(cast["X"], cast["Y"]), cast["V"])
    return from_arrays(cast["X"], cast["Y"], cast.get("V"), wrt)


def from_json(body: bytes, model: type[BaseModel], default_dtype: str, products: str | None = None) -> PolicyRequest:
    """A JSON body validated against its endpoint's schema (`app.http.schemas`) as a request; 400
    if not JSON, 422 if not a valid problem. `products`: "vjp" or "jvp" when the body carries
    cotangents U or tangents V with a K axis."""
    req = validated(body, model, "X and Y")
    dtype = req.dtype or default_dtype  # type: ignore[attr-defined]
    p = from_lists(
        req.X,  # type: ignore[attr-defined]
        req.Y,  # type: ignore[attr-defined]
        dtype,
        V=None if products else getattr(req, "V", None),
        wrt=getattr(req, "wrt", ("X",)),
    )
    if products == VJP:
        return with_cotangents(p, finite_as(req.U, "U", dtype), req.sum_states)  # type: ignore[attr-defined]
    if products == JVP:
        return with_tangents(p, finite_as(req.V, "V", dtype))  # type: ignore[attr-defined]
    return p


def from_npz(
    body: bytes,
    names: tuple[str, ...],
    dtype: str | None,
    max_bytes: int,
    products: str | None = None,
    sum_states: bool = False,
    wrt: tuple[str, ...] = ("X",),
) -> PolicyRequest:
    """An .npz holding `names` (X, Y[, V or U]) as float32/float64 arrays, as a request. The
    computation's dtype is the `dtype` argument if given, else the widest of the arrays'."""
    return from_named(read(body, names, max_bytes), dtype, products, sum_states, wrt)
