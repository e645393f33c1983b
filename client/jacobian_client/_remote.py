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
from typing import TYPE_CHECKING, Any

import numpy as np

from jacobian_client._core import JacobianServiceError

if TYPE_CHECKING:
    from jacobian_client._clients import Client

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


def _hs_from_hessian(H: np.ndarray, E: int, n_out: int, n_in: int) -> np.ndarray:
    """A Hessian (E, O, I, I) as the H·e_k of the standard basis e_k over all E·I inputs:
    (E·I, E, O, I), zero across examples."""
    hs = np.zeros((E, n_in, E, n_out, n_in), H.dtype)
    hs[np.arange(E), :, np.arange(E)] = np.moveaxis(H, 3, 1)  # [e, i', o, i] = H[e, o, i, i']
    return hs.reshape(E * n_in, E, n_out, n_in)


class ModelRemote(Remote):
    """A served model (`client.model(name)`), the built-in one's or the repository's: flat
    arguments are its inputs in the card's order, then, with `variables`, stand-ins for its
    trainable variables (their values are the server's; the stand-ins say which gradients flow).
    A batch model's inputs carry the examples' axis, but its shared inputs (the built-in's X), and
    one example may come without it where the card allows (the built-in's Y as F)."""

    def __init__(self, client: Client, name: str, variables: bool = False) -> None:
        self.client, self.name = client, name
        self.model = client.model(name)
        card = self.model.card()
        if card["state"] != "ready":
            raise JacobianServiceError(f"Model {name!r} is {card['state']}: {card.get('reason')}", code="model_failed")
        self.card = card
        self.batch = bool(card["batch"])
        tensors = card["inputs"] + (card["variables"] if variables else [])
        self.inputs = tuple(Spec(t["name"], tuple(t["shape"]), t["dtype"]) for t in tensors)
        self.n_inputs = len(card["inputs"])
        self.n_variables = len(self.inputs) - self.n_inputs
        self.shared = set(card.get("shared", []))
        self.dtypes = tuple(card.get("dtypes", []))  # it computes in its floating arguments' dtype
        self._open: dict[tuple[tuple[int, ...], ...], tuple[Spec, ...]] = {}

    # ---- shapes

    def _one(self, shapes: Sequence[tuple[int, ...]]) -> bool:
        """Whether the arguments are one example sent without the batch axis."""
        return bool(self.card.get("optional_batch")) and all(
            len(shape) == len(spec.shape) - 1
            for spec, shape in zip(self.inputs[: self.n_inputs], shapes, strict=False)
            if spec.name not in self.shared
        )

    def _examples(self, xs: Sequence[Any]) -> bool:
        """Whether these arguments carry the examples' axis (a batch model's, not one example)."""
        return self.batch and not self._one([tuple(np.shape(x)) for x in xs[: self.n_inputs]])

    def _per_example(self, i: int, xs: Sequence[Any]) -> bool:
        """Whether input i's derivatives are each example's own (it has the examples' axis)."""
        return not self._is_variable(i) and self.inputs[i].name not in self.shared and self._examples(xs)

    def out_specs(self, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[str]) -> tuple[Spec, ...]:
        key = tuple(tuple(s) for s in shapes[: self.n_inputs])
        if key in self._open:
            return self._open[key]
        one = self._one(key)
        sizes: dict[str, int] = {}  # the sizes the card names (A, F, B), from the arguments
        for t, shape in zip(self.card["inputs"], key, strict=False):
            symbols = t.get("symbols") or []
            sizes |= dict(zip(symbols[1:] if one and t["name"] not in self.shared else symbols, shape, strict=False))
        floating = [d for d in dtypes[: self.n_inputs] if d in FLOATING]
        computed = str(np.result_type(*floating)) if self.dtypes and floating else None
        B = next((s[0] for s, spec in zip(key, self.inputs, strict=False) if spec.name not in self.shared), None)
        outs = []
        for t in self.card["outputs"]:
            dims, symbols = list(t["shape"]), list(t.get("symbols") or [""] * len(t["shape"]))
            if one:
                dims, symbols = dims[1:], symbols[1:]
            elif self.batch and dims and dims[0] is None:
                dims[0] = B
            known: tuple[Any, ...] = tuple(
                sizes.get(s, d) if d is None else d for d, s in zip(dims, symbols, strict=False)
            )
            outs.append(Spec(t["name"], known, computed if computed and t["dtype"] in FLOATING else t["dtype"]))
        if any(d is None for o in outs for d in o.shape):  # sizes only a forward pass tells
            zeros = [np.zeros(s, spec.dtype) for s, spec in zip(key, self.inputs, strict=False)]
            outs = [Spec(o.name, a.shape, o.dtype) for o, a in zip(outs, self._apply(zeros), strict=True)]
        self._open[key] = tuple(outs)
        return self._open[key]

    def _named(self, xs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {spec.name: np.asarray(x) for spec, x in zip(self.inputs[: self.n_inputs], xs, strict=False)}

    def _out_names(self, idx: Sequence[int]) -> list[str]:
        return [self.card["outputs"][o]["name"] for o in idx]

    def _count(self) -> None:
        self.requests += 1

    def _is_variable(self, i: int) -> bool:
        return i >= self.n_inputs

    def _wrt_name(self, i: int) -> str:
        return "variables" if self._is_variable(i) else self.inputs[i].name

    # ---- requests

    def _apply(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        self._count()
        r = self.model.predict(self._named(xs))
        return [r.outputs[t["name"]] for t in self.card["outputs"]]

    def _jvp(self, xs: list[np.ndarray], ts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        if any(self._is_variable(i) for i in ts):
            raise NotServed(
                f"Forward mode in {self.name!r}'s variables is served only for a whole Jacobian (jacfwd); "
                "use reverse mode (jax.grad, jax.vjp, jax.jacrev) for their gradients"
            )
        self._count()
        r = self.model.jvp(self._named(xs), {self.inputs[i].name: t for i, t in ts.items()})
        assert r.jvp is not None
        return {o: r.jvp[t["name"]] for o, t in enumerate(self.card["outputs"]) if t["name"] in r.jvp}

    def _vjp(self, xs: list[np.ndarray], us: dict[int, np.ndarray], wrt: Sequence[int]) -> dict[int, np.ndarray]:
        cotangents = dict(zip(self._out_names(list(us)), us.values(), strict=True))
        found: dict[int, np.ndarray] = {}
        inputs = [i for i in wrt if self._per_example(i, xs)]
        if inputs:  # each example's own gradient
            self._count()
            r = self.model.vjp(self._named(xs), cotangents, wrt=[self.inputs[i].name for i in inputs])
            assert r.vjp is not None
            found |= {i: r.vjp[self.inputs[i].name] for i in inputs}
        variables = [i for i in wrt if self._is_variable(i)]
        shared = [i for i in wrt if not self._is_variable(i) and not self._per_example(i, xs)]
        if variables or shared:  # shared by the examples: summed over them
            self._count()
            names = [self.inputs[i].name for i in shared] + (["variables"] if variables else [])
            r = self.model.vjp(self._named(xs), cotangents, wrt=names, sum_batch=self._examples(xs))
            assert r.vjp is not None
            found |= {i: r.vjp[self.inputs[i].name] for i in variables + shared}
        return found

    def _jacobian(
        self, xs: list[np.ndarray], of: Sequence[int], wrt: Sequence[int]
    ) -> dict[tuple[int, int], np.ndarray]:
        self._count()
        names = list(dict.fromkeys(self._wrt_name(i) for i in wrt))
        r = self.model.jacobian(self._named(xs), wrt=names, of=self._out_names(of))
        assert r.jacobian is not None
        found = {}
        for o, name in zip(of, self._out_names(of), strict=True):
            for i in wrt:
                J = r.jacobian[name][self.inputs[i].name]
                if self._per_example(i, xs):  # per example -> the whole Jacobian
                    J = block_diagonal(J, len(self.card["outputs"][o]["shape"]))
                found[o, i] = J
        return found

    def _hvps(self, xs: list[np.ndarray], wrt: int, s: np.ndarray, of: Sequence[int]) -> dict[int, np.ndarray]:
        if self._is_variable(wrt):
            raise NotServed(f"Second derivatives in {self.name!r}'s variables are not served; only in one input")
        name, specs = self.inputs[wrt].name, self.specs(xs)
        E = xs[wrt].shape[0] if self._per_example(wrt, xs) else 1
        n_in = xs[wrt].size // E
        self._count()
        if s.shape[0] > 1 and is_basis([s]):  # every direction: the Hessian itself
            r = self.model.hessian(self._named(xs), wrt=[name], of=self._out_names(of))
            assert r.hessian is not None
            return {
                o: _hs_from_hessian(
                    r.hessian[n][name].reshape(E, specs[o].size // E, n_in, n_in), E, specs[o].size // E, n_in
                )
                for o, n in zip(of, self._out_names(of), strict=True)
            }
        r = self.model.hvp(self._named(xs), {name: s}, wrt=[name], of=self._out_names(of))
        assert r.hvp is not None
        K = s.shape[0]
        return {
            o: r.hvp[n][name].reshape(K, E, specs[o].size // E, n_in)
            for o, n in zip(of, self._out_names(of), strict=True)
        }
