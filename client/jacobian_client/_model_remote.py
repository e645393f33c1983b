"""A served model as the JAX and TensorFlow wrappers see it (`jacobian_client._remote.Remote`):
its flat arguments are the model's inputs in its card's order, then its variables' values when
they are chosen (sent with each request), and each derivative the wrappers' rules ask for is one request to its
operations (`client.model(name)`), the built-in `policy` as any other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from jacobian_client._core import JacobianServiceError, ModelResult
from jacobian_client._remote import FLOATING, NotServed, Remote, Spec, block_diagonal, is_basis


class ServedModel(Protocol):
    """A served model's operations (`jacobian_client.Model`)."""

    def card(self) -> dict[str, Any]: ...
    def variables(self) -> dict[str, np.ndarray]: ...
    def predict(self, inputs: Any, *, variables: Any = None) -> ModelResult: ...
    def jacobian(self, inputs: Any, *, wrt: Any = None, of: Any = None, variables: Any = None) -> ModelResult: ...
    def vjp(
        self, inputs: Any, cotangents: Any, *, wrt: Any = None, sum_batch: bool = False, variables: Any = None
    ) -> ModelResult: ...
    def jvp(self, inputs: Any, tangents: Any, *, of: Any = None, variables: Any = None) -> ModelResult: ...
    def hessian(self, inputs: Any, *, wrt: Any = None, of: Any = None, variables: Any = None) -> ModelResult: ...
    def hvp(
        self, inputs: Any, tangents: Any, *, wrt: Any = None, of: Any = None, variables: Any = None
    ) -> ModelResult: ...


class Serves(Protocol):
    """What serves models by name (`jacobian_client.Client`)."""

    def model(self, name: str) -> ServedModel: ...


def _hs_from_hessian(H: np.ndarray, E: int, n_out: int, n_in: int) -> np.ndarray:
    """A Hessian (E, O, I, I) as the H·e_k of the standard basis e_k over all E·I inputs:
    (E·I, E, O, I), zero across examples."""
    hs = np.zeros((E, n_in, E, n_out, n_in), H.dtype)
    hs[np.arange(E), :, np.arange(E)] = np.moveaxis(H, 3, 1)  # [e, i', o, i] = H[e, o, i, i']
    return hs.reshape(E * n_in, E, n_out, n_in)


class ModelRemote(Remote):
    """A served model (`client.model(name)`), the built-in one's or the repository's: flat
    arguments are its inputs in the card's order, then, with `variables`, its trainable variables'
    values, sent with every request: the served model computes at the caller's parameters.
    A batch model's inputs carry the examples' axis, but its shared inputs (the built-in's X), and
    one example may come without it where the card allows (the built-in's Y as F)."""

    def __init__(self, client: Serves, name: str, variables: bool = False) -> None:
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

    def _values(self, xs: Sequence[np.ndarray]) -> dict[str, np.ndarray] | None:
        """The variables' values the caller holds, by name (None without them: the server's)."""
        if not self.n_variables:
            return None
        return {
            spec.name: np.asarray(x) for spec, x in zip(self.inputs[self.n_inputs :], xs[self.n_inputs :], strict=True)
        }

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
        r = self.model.predict(self._named(xs), variables=self._values(xs))
        return [r.outputs[t["name"]] for t in self.card["outputs"]]

    def _jvp(self, xs: list[np.ndarray], ts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        if any(self._is_variable(i) for i in ts):
            raise NotServed(
                f"Forward mode in {self.name!r}'s variables is served only for a whole Jacobian (jacfwd); "
                "use reverse mode (jax.grad, jax.vjp, jax.jacrev) for their gradients"
            )
        self._count()
        r = self.model.jvp(self._named(xs), {self.inputs[i].name: t for i, t in ts.items()}, variables=self._values(xs))
        assert r.jvp is not None
        return {o: r.jvp[t["name"]] for o, t in enumerate(self.card["outputs"]) if t["name"] in r.jvp}

    def _vjp(self, xs: list[np.ndarray], us: dict[int, np.ndarray], wrt: Sequence[int]) -> dict[int, np.ndarray]:
        cotangents = dict(zip(self._out_names(list(us)), us.values(), strict=True))
        found: dict[int, np.ndarray] = {}
        inputs = [i for i in wrt if self._per_example(i, xs)]
        if inputs:  # each example's own gradient
            self._count()
            names = [self.inputs[i].name for i in inputs]
            r = self.model.vjp(self._named(xs), cotangents, wrt=names, variables=self._values(xs))
            assert r.vjp is not None
            found |= {i: r.vjp[self.inputs[i].name] for i in inputs}
        variables = [i for i in wrt if self._is_variable(i)]
        shared = [i for i in wrt if not self._is_variable(i) and not self._per_example(i, xs)]
        if variables or shared:  # shared by the examples: summed over them
            self._count()
            names = [self.inputs[i].name for i in shared] + (["variables"] if variables else [])
            summed = self._examples(xs)
            r = self.model.vjp(self._named(xs), cotangents, wrt=names, sum_batch=summed, variables=self._values(xs))
            assert r.vjp is not None
            found |= {i: r.vjp[self.inputs[i].name] for i in variables + shared}
        return found

    def _jacobian(
        self, xs: list[np.ndarray], of: Sequence[int], wrt: Sequence[int]
    ) -> dict[tuple[int, int], np.ndarray]:
        self._count()
        names = list(dict.fromkeys(self._wrt_name(i) for i in wrt))
        r = self.model.jacobian(self._named(xs), wrt=names, of=self._out_names(of), variables=self._values(xs))
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
            r = self.model.hessian(self._named(xs), wrt=[name], of=self._out_names(of), variables=self._values(xs))
            assert r.hessian is not None
            return {
                o: _hs_from_hessian(
                    r.hessian[n][name].reshape(E, specs[o].size // E, n_in, n_in), E, specs[o].size // E, n_in
                )
                for o, n in zip(of, self._out_names(of), strict=True)
            }
        r = self.model.hvp(self._named(xs), {name: s}, wrt=[name], of=self._out_names(of), variables=self._values(xs))
        assert r.hvp is not None
        K = s.shape[0]
        return {
            o: r.hvp[n][name].reshape(K, E, specs[o].size // E, n_in)
            for o, n in zip(of, self._out_names(of), strict=True)
        }
