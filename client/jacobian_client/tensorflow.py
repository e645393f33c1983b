"""A served model as a TensorFlow function: `tf.GradientTape` and `tf.autodiff.ForwardAccumulator`,
eager or in a `tf.function`, see it as an op with derivatives (extra `[tensorflow]`).

    import jacobian_client.tensorflow as jct
    policy = jct.policy(client)          # W = policy(X, Y), the built-in model
    mlp = jct.model(client, "mlp")       # {"y": ...} = mlp({"x": ...})

Each request is a `tf.numpy_function` with static shapes from the model's card, recorded on the
tapes and accumulators with both of its derivatives (`record_operation`'s backward and forward
functions, as TensorFlow records its own ops): the forward pass's are one `/vjp` and one `/jvp`
request; the derivatives of those products are served too — in their (co)tangents by the other
product, in the inputs by `/hvp` — so a gradient of a gradient, forward over reverse, and the
rest of second order are served in one input at a time; mixed second derivatives across two
inputs, second derivatives in a model's variables and third derivatives raise
`JacobianServiceError` (code `not_served`). Only the inputs a tape watches get gradients computed.

A service error raises `JacobianServiceError` eagerly. Inside a graph TensorFlow turns every Python
exception of a `numpy_function` into a `tf.errors.OpError` that carries the server's message;
`jct.function`, a `tf.function` in every other way, raises the service's error itself again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from jacobian_client._model_remote import ModelRemote, Serves
from jacobian_client._remote import NotServed
from jacobian_client._tf_ops import _served, function

__all__ = ["function", "model", "policy"]


def policy(client: Serves) -> Callable[[Any, Any], tf.Tensor]:
    """W = log_softmax(X·Y) of the service's built-in model, for `tf.GradientTape` and `tf.function`:
    `model(client, "policy")`, its W."""
    served = model(client, "policy")

    def f(X: Any, Y: Any) -> tf.Tensor:
        X = tf.convert_to_tensor(X)
        return served({"X": X, "Y": tf.cast(tf.convert_to_tensor(Y), X.dtype)})["W"]

    f.remote = served.remote  # type: ignore[attr-defined]
    return f


def model(client: Serves, name: str, *, variables: bool = False) -> Callable[..., dict[str, tf.Tensor]]:
    """A served model (the built-in `policy` or a repository's) for `tf.GradientTape` and
    `tf.function`: f(inputs) -> {output: tensor};
    with `variables=True`, f(variables, inputs), computed at those values of the model's trainable
    variables (tensors or `tf.Variable`s, sent with each request; `f.served_variables()` gives the
    service's as `tf.Variable`s, `f.zero_variables()` zeros): its gradients in `variables` are the
    model's parameter gradients there, summed over the batch, for a Keras optimizer."""
    remote = ModelRemote(client, name, variables=variables)
    in_names = [s.name for s in remote.inputs[: remote.n_inputs]]
    var_specs = remote.inputs[remote.n_inputs :]
    out_names = [t["name"] for t in remote.card["outputs"]]

    def run(inputs: Mapping[str, Any], vs: Mapping[str, Any] | None) -> dict[str, tf.Tensor]:
        if set(inputs) != set(in_names):
            raise NotServed(f"{name!r} takes inputs {in_names}, not {sorted(inputs)}")
        args = [tf.convert_to_tensor(inputs[k]) for k in in_names]
        if vs is not None:
            args += [tf.convert_to_tensor(vs[s.name]) for s in var_specs]
        return dict(zip(out_names, _served(remote, args), strict=True))

    def f(*args: Any) -> dict[str, tf.Tensor]:
        return run(args[1], args[0]) if variables else run(args[0], None)

    def zero_variables() -> dict[str, tf.Variable]:
        return {s.name: tf.Variable(tf.zeros(s.shape, s.dtype), name=s.name.replace("/", "_")) for s in var_specs}

    def served_variables() -> dict[str, tf.Variable]:
        values = remote.model.variables()
        return {s.name: tf.Variable(values[s.name], name=s.name.replace("/", "_")) for s in var_specs}

    f.remote = remote  # type: ignore[attr-defined]
    f.zero_variables = zero_variables  # type: ignore[attr-defined]
    f.served_variables = served_variables  # type: ignore[attr-defined]
    return f
