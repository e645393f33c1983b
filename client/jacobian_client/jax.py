"""A served model as a JAX function: `jax.grad`, `jax.jacrev`, `jax.jacfwd`, `jax.vmap`, `jax.jit`
and `jax.hessian` differentiate through it as if it were local (extra `[jax]`).

    import jacobian_client.jax as jcj
    policy = jcj.policy(client)            # W = policy(X, Y), the built-in model
    mlp = jcj.model(client, "mlp")         # {"y": ...} = mlp({"x": ...}), a repository model

One JAX primitive carries every request. Its rules, as JAX's own primitives have them: the JVP of
the forward pass is a `/jvp` product, linear in its tangents, whose transpose is a `/vjp` product
(so reverse mode takes one VJP request, not one per output); the JVP of a product is a
second-order product (`/hvp`, or `/hessian` for every direction); the batching rule gives a
product's `vmap`ped (co)tangents one leading K axis, so a `vmap`, a `jacrev` or a `jacfwd` is one
request (`/jacobian` when its vectors are the standard basis: `jacobian_client._remote`). Under
`jax.jit` the requests run through `jax.pure_callback`, with the outputs' shapes from the model's
card; an unused forward pass is dropped with the rest of the dead code."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jacobian_client._jax_primitive import APPLY, _bind
from jacobian_client._model_remote import ModelRemote, Serves
from jacobian_client._remote import NotServed

# ---- the user's functions


def policy(client: Serves) -> Callable[[Any, Any], jax.Array]:
    """W = log_softmax(X·Y) of the service's built-in model, as a JAX function of X (A×F) and Y
    (F, or B×F), in X's dtype: `model(client, "policy")`, its W. `.remote.requests` counts its
    requests."""
    served = model(client, "policy")

    def f(X: Any, Y: Any) -> jax.Array:
        X = jnp.asarray(X)
        return served({"X": X, "Y": jnp.asarray(Y, X.dtype)})["W"]

    f.remote = served.remote  # type: ignore[attr-defined]
    return f


def model(client: Serves, name: str, *, variables: bool = False) -> Callable[..., dict[str, jax.Array]]:
    """A served model (the built-in `policy` or a repository's) as a JAX function of its inputs by
    name, {output: array} out. With `variables=True` it is f(variables, inputs), computed at those
    values of the model's trainable variables (sent with each request; `f.served_variables()`
    gives the service's, `f.zero_variables()` zeros): gradients in `variables` are the model's
    parameter gradients there, summed over the batch, for the user's optimizer (optax)."""
    remote = ModelRemote(client, name, variables=variables)
    in_names = [s.name for s in remote.inputs[: remote.n_inputs]]
    var_names = [s.name for s in remote.inputs[remote.n_inputs :]]
    out_names = [t["name"] for t in remote.card["outputs"]]

    def flat(inputs: Mapping[str, Any], vs: Mapping[str, Any] | None) -> list[Any]:
        unknown = set(inputs) - set(in_names)
        missing = [k for k in in_names if k not in inputs]
        if unknown or missing:
            raise NotServed(f"{name!r} takes inputs {in_names}; missing {missing}, unknown {sorted(unknown)}")
        args = [jnp.asarray(inputs[k]) for k in in_names]
        if vs is not None:
            if set(vs) != set(var_names):
                raise NotServed(f"{name!r}'s variables are {var_names}; f.zero_variables() gives stand-ins")
            args += [jnp.asarray(vs[k]) for k in var_names]
        return args

    def run(args: list[Any]) -> dict[str, jax.Array]:
        return dict(zip(out_names, _bind(*args, remote=remote, op=APPLY), strict=True))

    if variables:

        def f(vs: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, jax.Array]:
            return run(flat(inputs, vs))

    else:

        def f(inputs: Mapping[str, Any]) -> dict[str, jax.Array]:  # type: ignore[misc]
            return run(flat(inputs, None))

    def zero_variables() -> dict[str, jax.Array]:
        specs = remote.inputs[remote.n_inputs :]
        return {s.name: jnp.zeros(s.shape, jax.dtypes.canonicalize_dtype(np.dtype(s.dtype))) for s in specs}

    def served_variables() -> dict[str, jax.Array]:
        return {k: jnp.asarray(v) for k, v in remote.model.variables().items()}

    f.remote = remote  # type: ignore[attr-defined]
    f.zero_variables = zero_variables  # type: ignore[attr-defined]
    f.served_variables = served_variables  # type: ignore[attr-defined]
    return f
