"""A served model as the JAX and TensorFlow wrappers see it, free of both: a function of a flat
list of NumPy arrays (the model's inputs, then stand-ins for its variables when they are chosen)
to a flat list of outputs, and each derivative the wrappers' rules ask for as one request.

Products carry leading axes (`lead`): the K (co)tangents of a `vmap`, a `jacrev` or a `jacfwd`,
sent as one request with one K axis. When those K vectors are the standard basis — the whole
Jacobian (or Hessian) is wanted — the request is `/jacobian` (`/hessian`) instead: the products'
answer would be the whole Jacobian, never smaller than `/jacobian`'s (B times larger for a
repository model's per-example Jacobian), and they would carry the K vectors too (for a `jacfwd`
of a wide input, more than the answer). Where the sizes tie (the built-in model's `jacrev`), the
two took 0.70× to 1.42× of each other's time across runs of `bench.client_wrappers`: noise, so
the rule has no exception. The service's Hessians are in one input; the second-order products here contract
its Hessian-vector products with the other vector on the client (arithmetic, not derivatives)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jacobian_client._core import JacobianServiceError

FLOATING = ("float16", "bfloat16", "float32", "float64")
Lead = tuple[int, ...]


class NotServed(JacobianServiceError):
    """A derivative the service does not compute (say, a third derivative), raised where the
    user's transformation asks for it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="not_served")


@dataclass(frozen=True)
class Spec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def floating(self) -> bool:
        return self.dtype in FLOATING

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def is_basis(vectors: Sequence[np.ndarray]) -> bool:
    """Whether K vectors (K first), flattened and side by side, are the K×K identity."""
    K = vectors[0].shape[0]
    if sum(math.prod(v.shape[1:]) for v in vectors) != K:
        return False
    flat = np.concatenate([v.reshape(K, -1) for v in vectors], axis=1)
    return bool(np.array_equal(flat, np.eye(K, dtype=flat.dtype)))


def block_diagonal(per_example: np.ndarray, out_rank: int) -> np.ndarray:
    """(B, *out[1:], *in[1:]) -> (B, *out[1:], B, *in[1:]): examples independent, zeros across."""
    B = per_example.shape[0]
    out, inn = per_example.shape[1:out_rank], per_example.shape[out_rank:]
    flat = per_example.reshape(B, math.prod(out), math.prod(inn))
    full = np.zeros((B, flat.shape[1], B, flat.shape[2]), per_example.dtype)
    full[np.arange(B), :, np.arange(B), :] = flat
    return full.reshape(B, *out, B, *inn)


class Remote:
    """A served function of flat arrays. Subclasses make the requests (`_apply`, `_jvp`, `_vjp`,
    `_jacobian`, `_hvps`); this class shapes leading axes, picks the Jacobian for a basis, and
    contracts second-order products."""

    name: str
    inputs: tuple[Spec, ...]  # the flat arguments' names and dtypes (shapes as the card has them)
    requests: int = 0  # how many HTTP requests this function has made (tests and benchmarks read it)

    # ---- what a subclass serves

    def out_specs(self, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[str]) -> tuple[Spec, ...]:
        """The outputs' shapes and dtypes for arguments of these shapes and dtypes."""
        raise NotImplementedError

    def _apply(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def _jvp(self, xs: list[np.ndarray], ts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """{input: (K, *in)} -> {floating output: (K, *out)}."""
        raise NotImplementedError

    def _vjp(self, xs: list[np.ndarray], us: dict[int, np.ndarray], wrt: Sequence[int]) -> dict[int, np.ndarray]:
        """{output: (K, *out)} -> {input in wrt: (K, *in)}."""
        raise NotImplementedError

    def _jacobian(
        self, xs: list[np.ndarray], of: Sequence[int], wrt: Sequence[int]
    ) -> dict[tuple[int, int], np.ndarray]:
        """{(output, input): (*out, *in)}, the whole Jacobian of each pair."""
        raise NotImplementedError

    def _hvps(self, xs: list[np.ndarray], wrt: int, s: np.ndarray, of: Sequence[int]) -> dict[int, np.ndarray]:
        """{output: (K, E, O, I)}: each output number's Hessian in input `wrt` along each of K
        tangents s (K, *in), over E independent examples (E = 1 when there are none) of O
        output and I input numbers each."""
        raise NotImplementedError

    # ---- what the wrappers call

    def specs(self, xs: Sequence[Any]) -> tuple[Spec, ...]:
        return self.out_specs([tuple(x.shape) for x in xs], [str(np.dtype(x.dtype)) for x in xs])

    def apply(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        return self._apply(xs)

    def jvp(
        self, xs: list[np.ndarray], ts: Mapping[int, np.ndarray], lead: Lead, outs: Sequence[int]
    ) -> list[np.ndarray]:
        """J·t for each output in `outs`, (*lead, *out), the tangents (*lead, *in)."""
        specs = self.specs(xs)
        K = math.prod(lead)
        flat = {i: t.reshape(K, *xs[i].shape) for i, t in sorted(ts.items())}
        if K > 1 and is_basis(list(flat.values())):
            blocks = self._jacobian(xs, outs, list(flat))
            found = {o: np.concatenate([blocks[o, i].reshape(specs[o].size, -1).T for i in flat], axis=0) for o in outs}
        else:
            found = self._jvp(xs, flat)
        return [found[o].reshape((*lead, *specs[o].shape)) for o in outs]

    def vjp(
        self, xs: list[np.ndarray], us: Mapping[int, np.ndarray], lead: Lead, wrt: Sequence[int]
    ) -> list[np.ndarray]:
        """uᵀJ for each input in `wrt`, (*lead, *in), the cotangents (*lead, *out)."""
        specs = self.specs(xs)
        K = math.prod(lead)
        flat = {o: u.reshape(K, *specs[o].shape) for o, u in sorted(us.items())}
        if K > 1 and is_basis(list(flat.values())):
            blocks = self._jacobian(xs, list(flat), wrt)
            found = {
                i: np.concatenate([blocks[o, i].reshape(specs[o].size, *xs[i].shape) for o in flat], axis=0)
                for i in wrt
            }
        else:
            found = self._vjp(xs, flat, wrt)
        return [found[i].reshape((*lead, *xs[i].shape)) for i in wrt]

    def vhp(
        self, xs: list[np.ndarray], w: int, us: Mapping[int, np.ndarray], s: np.ndarray, lu: Lead, ls: Lead
    ) -> np.ndarray:
        """Σ_o uᵀ H_o s in input w: (*lu, *ls, *in), from the service's H·s of each output."""
        Ku, Ks = math.prod(lu), math.prod(ls)
        hs = self._hvps(xs, w, s.reshape(Ks, *xs[w].shape), sorted(us))
        total = 0.0
        for o, u in us.items():
            _, examples, n_out, _ = hs[o].shape
            total = total + np.einsum("ueo,seoi->usei", u.reshape(Ku, examples, n_out), hs[o])
        return np.asarray(total).reshape((*lu, *ls, *xs[w].shape))

    def hvp2(
        self, xs: list[np.ndarray], w: int, t: np.ndarray, s: np.ndarray, lt: Lead, ls: Lead, outs: Sequence[int]
    ) -> list[np.ndarray]:
        """tᵀ H_o s in input w for each output: (*lt, *ls, *out)."""
        specs = self.specs(xs)
        Kt, Ks = math.prod(lt), math.prod(ls)
        hs = self._hvps(xs, w, s.reshape(Ks, *xs[w].shape), outs)
        found = []
        for o in outs:
            _, examples, _, n_in = hs[o].shape
            both = np.einsum("tei,seoi->tseo", t.reshape(Kt, examples, n_in), hs[o])
            found.append(both.reshape((*lt, *ls, *specs[o].shape)))
        return found
