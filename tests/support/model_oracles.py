"""The example repository's networks written again in JAX, from each SavedModel's variables: the
independent oracle of every derivative the service returns for them (with JAX's own autodiff,
in float64 whatever the model's dtype)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from app.engine import repository

jax.config.update("jax_enable_x64", True)

Params = dict[str, jax.Array]
Inputs = dict[str, jax.Array]
Network = Callable[[Params, Inputs], dict[str, jax.Array]]


def variables(path: Path) -> dict[str, np.ndarray]:
    """The SavedModel's trainable variables, by the names its card gives them, in float64."""
    loaded = tf.saved_model.load(str(path))  # held: a signature alone loses its variables
    signature = loaded.signatures["serving_default"]
    names = repository.variable_names(signature)
    return {n: v.numpy().astype(np.float64) for n, v in zip(names, signature.trainable_variables, strict=True)}


def _dense_tanh(x: jax.Array, p: Params, prefix: str, layers: int) -> jax.Array:
    for i in range(layers):
        x = x @ p[f"{prefix}/w{i}"] + p[f"{prefix}/b{i}"]
        if i + 1 < layers:
            x = jnp.tanh(x)
    return x


def policy_mlp(p: Params, x: Inputs) -> dict[str, jax.Array]:
    h = jnp.tanh(_dense_tanh(x["state"], p, "body", 2))
    return {"log_probs": jax.nn.log_softmax(_dense_tanh(h, p, "logits", 1)), "value": _dense_tanh(h, p, "value", 1)}


def mlp(p: Params, x: Inputs) -> dict[str, jax.Array]:
    return {"y": _dense_tanh(x["x"], p, "dense", 3)}


def pair(p: Params, x: Inputs) -> dict[str, jax.Array]:
    a, b = x["a"], x["b"]
    return {"s": a * b * p["scale"] + jnp.sin(a), "d": a - jnp.tanh(b)}


def actions(p: Params, x: Inputs) -> dict[str, jax.Array]:
    log_probs = jax.nn.log_softmax(_dense_tanh(x["state"], p, "dense", 2))
    return {"log_prob": jnp.take_along_axis(log_probs, x["action"][:, None], axis=1)[:, 0]}


def wide(p: Params, x: Inputs) -> dict[str, jax.Array]:
    return {"y": _dense_tanh(x["x"], p, "dense", 2)}


NETWORKS: dict[str, Network] = {"policy_mlp": policy_mlp, "mlp": mlp, "pair": pair, "actions": actions, "wide": wide}


class Oracle:
    """One network's derivatives, per example (vmapped over the batch) or of the whole batch."""

    def __init__(self, name: str, path: Path) -> None:
        self.net = NETWORKS[name]
        self.params = {k: jnp.asarray(v) for k, v in variables(path).items()}

    def at(self, values: dict[str, np.ndarray]) -> Oracle:
        """The same network at other values of some or all of its variables."""
        other = copy.copy(self)
        other.params = {**self.params, **{k: jnp.asarray(np.asarray(v, np.float64)) for k, v in values.items()}}
        return other

    def _as64(self, inputs: dict[str, np.ndarray]) -> Inputs:
        return {k: jnp.asarray(v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in inputs.items()}

    def outputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.net(self.params, self._as64(inputs)).items()}

    def _one(self, inputs: Inputs) -> Callable[..., dict[str, jax.Array]]:
        """f(params, x) of one example: the batch axis added and taken off."""

        def f(params: Params, x: Inputs) -> dict[str, jax.Array]:
            out = self.net(params, {k: v[None] for k, v in x.items()})
            return {k: v[0] for k, v in out.items()}

        return f

    def jacobian(self, inputs: dict[str, np.ndarray], wrt: str) -> dict[str, np.ndarray]:
        """Per example: output -> (B, *out[1:], *wrt[1:]); for "variables", output -> variable -> (B, *out[1:], *v)."""
        x = self._as64(inputs)
        f = self._one(x)
        if wrt == "variables":
            per = jax.vmap(lambda xb: jax.jacrev(lambda p: f(p, xb))(self.params))(x)
            return jax.tree.map(np.asarray, per)  # type: ignore[no-any-return]

        def g(xb: Inputs) -> dict[str, jax.Array]:
            return jax.jacrev(lambda v: f(self.params, {**xb, wrt: v}))(xb[wrt])

        return {k: np.asarray(v) for k, v in jax.vmap(g)(x).items()}

    def full_jacobian(self, inputs: dict[str, np.ndarray], wrt: str) -> dict[str, np.ndarray]:
        x = self._as64(inputs)
        jac = jax.jacrev(lambda v: self.net(self.params, {**x, wrt: v}))(x[wrt])
        return {k: np.asarray(v) for k, v in jac.items()}

    def hessian(self, inputs: dict[str, np.ndarray], wrt: str) -> dict[str, np.ndarray]:
        x = self._as64(inputs)
        f = self._one(x)

        def h(xb: Inputs) -> dict[str, jax.Array]:
            return jax.hessian(lambda v: f(self.params, {**xb, wrt: v}))(xb[wrt])

        return {k: np.asarray(v) for k, v in jax.vmap(h)(x).items()}

    def vjp_variables(self, inputs: dict[str, np.ndarray], cotangents: dict[str, np.ndarray]) -> dict[str, Any]:
        """Σ over the batch of cotangent · ∂outputs/∂variables: the summed (policy) gradient."""
        x = self._as64(inputs)
        _, pull = jax.vjp(lambda p: self.net(p, x), self.params)
        full = {
            k: jnp.asarray(cotangents[k], jnp.float64) if k in cotangents else jnp.zeros_like(v)
            for k, v in self.net(self.params, x).items()
        }
        (grads,) = pull(full)
        return {k: np.asarray(v) for k, v in grads.items()}
