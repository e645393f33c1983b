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
    """A repository model (`client.model(name)`): flat arguments are its inputs in the card's order,
    then, with `variables`, stand-ins for its trainable variables (their values are the server's;
    the stand-ins say which gradients flow)."""

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
        self._open: dict[tuple[tuple[int, ...], ...], tuple[Spec, ...]] = {}

    # ---- shapes

    def out_specs(self, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[str]) -> tuple[Spec, ...]:
        key = tuple(tuple(s) for s in shapes[: self.n_inputs])
        if key in self._open:
            return self._open[key]
        B = key[0][0] if self.batch and key and key[0] else None
        outs = []
        for t in self.card["outputs"]:
            shape = list(t["shape"])
            if self.batch and shape and shape[0] is None:
                shape[0] = B
            outs.append(Spec(t["name"], tuple(shape), t["dtype"]))
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
        inputs = [i for i in wrt if not self._is_variable(i)]
        if inputs:  # each example's own gradient
            self._count()
            r = self.model.vjp(self._named(xs), cotangents, wrt=[self.inputs[i].name for i in inputs])
            assert r.vjp is not None
            found |= {i: r.vjp[self.inputs[i].name] for i in inputs}
        variables = [i for i in wrt if self._is_variable(i)]
        if variables:  # shared by the examples: summed over them
            self._count()
            r = self.model.vjp(self._named(xs), cotangents, wrt=["variables"], sum_batch=self.batch)
            assert r.vjp is not None
            found |= {i: r.vjp[self.inputs[i].name] for i in variables}
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
                if self.batch and not self._is_variable(i):  # per example -> the whole Jacobian
                    J = block_diagonal(J, len(self.card["outputs"][o]["shape"]))
                found[o, i] = J
        return found

    def _hvps(self, xs: list[np.ndarray], wrt: int, s: np.ndarray, of: Sequence[int]) -> dict[int, np.ndarray]:
        if self._is_variable(wrt):
            raise NotServed(f"Second derivatives in {self.name!r}'s variables are not served; only in one input")
        name, specs = self.inputs[wrt].name, self.specs(xs)
        E = xs[wrt].shape[0] if self.batch else 1
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


class PolicyRemote(Remote):
    """The built-in model, W = log_softmax(X·Y): arguments X (A×F) and Y (F, or B×F), in X's dtype.
    The service's products are in X; derivatives in Y come from its Jacobian in Y."""

    name = "policy"

    def __init__(self, client: Client) -> None:
        self.client = client
        self.inputs = (Spec("X", (-1, -1), "float32"), Spec("Y", (-1,), "float32"))

    def out_specs(self, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[str]) -> tuple[Spec, ...]:
        (A, _), y = shapes
        return (Spec("W", (*y[:-1], A), dtypes[0]),)

    def _dtype(self, xs: Sequence[np.ndarray]) -> str:
        return str(np.asarray(xs[0]).dtype)

    def _batched(self, xs: Sequence[np.ndarray]) -> bool:
        return np.ndim(xs[1]) == 2

    def _apply(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        X, Y = xs
        self.requests += 1
        return [self.client.jvp(X, Y, np.zeros_like(X), dtype=self._dtype(xs)).W]

    def _jvp(self, xs: list[np.ndarray], ts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        X, Y = xs
        if 1 in ts:  # a product in Y: from the Jacobian in both
            blocks = self._jacobian(xs, [0], sorted(ts))
            W = self.specs(xs)[0]
            total = sum(blocks[0, i].reshape(W.size, -1) @ t.reshape(t.shape[0], -1).T for i, t in ts.items())
            return {0: np.asarray(total).T.reshape(-1, *W.shape)}
        self.requests += 1
        JV = self.client.jvp(X, Y, ts[0], dtype=self._dtype(xs)).JV
        assert JV is not None
        return {0: JV}

    def _vjp(self, xs: list[np.ndarray], us: dict[int, np.ndarray], wrt: Sequence[int]) -> dict[int, np.ndarray]:
        X, Y = xs
        if 1 in wrt:
            blocks = self._jacobian(xs, [0], wrt)
            u = us[0].reshape(us[0].shape[0], -1)
            return {i: (u @ blocks[0, i].reshape(u.shape[1], -1)).reshape(-1, *xs[i].shape) for i in wrt}
        self.requests += 1
        UJ = self.client.vjp(X, Y, us[0], sum_states=self._batched(xs), dtype=self._dtype(xs)).UJ
        assert UJ is not None
        return {0: UJ}

    def _jacobian(
        self, xs: list[np.ndarray], of: Sequence[int], wrt: Sequence[int]
    ) -> dict[tuple[int, int], np.ndarray]:
        X, Y = xs
        self.requests += 1
        r = self.client.jacobian(X, Y, wrt=["XY"[i] for i in wrt], dtype=self._dtype(xs))
        found: dict[tuple[int, int], np.ndarray] = {}
        if r.J is not None:
            found[0, 0] = r.J
        if r.J_Y is not None:
            found[0, 1] = block_diagonal(r.J_Y, 2) if self._batched(xs) else r.J_Y
        return found

    def _hvps(self, xs: list[np.ndarray], wrt: int, s: np.ndarray, of: Sequence[int]) -> dict[int, np.ndarray]:
        if wrt != 0:
            raise NotServed("The built-in model's second derivatives are served in X only, not in Y")
        X, Y = xs
        n_out, n_in, K = self.specs(xs)[0].size, X.size, s.shape[0]
        self.requests += 1
        if K == 1:
            HV = self.client.hvp(X, Y, s[0], dtype=self._dtype(xs)).HV
            assert HV is not None
            return {0: HV.reshape(1, 1, n_out, n_in)}
        H = self.client.hessian(X, Y, dtype=self._dtype(xs)).H
        assert H is not None
        H = H.reshape(n_out, n_in, n_in)
        return {0: np.einsum("oij,kj->koi", H, s.reshape(K, n_in))[:, None]}
