"""`jacobian_client.tensorflow` against a live server: `tf.GradientTape` (eager and in a
`tf.function`) and `tf.autodiff.ForwardAccumulator` through the remote built-in model and each
example repository model equal the same derivatives of the local TensorFlow model (the SavedModel
loaded here, differentiated by its own tape), with the requests counted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jacobian_client.tensorflow as jct
import numpy as np
import pytest
import tensorflow as tf
from jacobian_client import Client, JacobianServiceError

from tests.support.wrappers import close, readme_example, requests


class Local:
    """A repository model's `serving_default`, loaded here: the object `load` returns is held, as a
    signature alone loses its variables."""

    def __init__(self, path: Path) -> None:
        self.loaded = tf.saved_model.load(str(path))
        self.fn = self.loaded.signatures["serving_default"]

    def __call__(self, inputs: dict[str, Any]) -> dict[str, tf.Tensor]:
        return self.fn(**inputs)  # type: ignore[no-any-return]


def local_policy(X: tf.Tensor, Y: tf.Tensor) -> tf.Tensor:
    return tf.nn.log_softmax(tf.linalg.matvec(X, Y) if Y.shape.rank == 1 else Y @ tf.transpose(X))


def gradient(loss: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(x)
    return tape.gradient(value, x)


def gradient_of(loss: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[tf.Tensor], tf.Tensor]:
    return lambda x: gradient(loss, x)


def twice(loss: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[tf.Tensor], tf.Tensor]:
    """x -> ∇ ‖∇loss(x)‖², reverse over reverse."""
    return gradient_of(lambda x: tf.reduce_sum(gradient(loss, x) ** 2))


def forward(f: Callable[[tf.Tensor], Any], x: tf.Tensor, t: tf.Tensor) -> Any:
    """J·t by forward mode."""
    with tf.autodiff.ForwardAccumulator(x, t) as acc:
        y = f(x)
    return acc.jvp(y)


def test_the_built_in_model_under_the_tape_and_forward_mode(repository_client: tuple[Client, Path]) -> None:
    client, _ = repository_client
    policy = client.as_tf()
    rng = np.random.default_rng(1)
    X, Y, Ys = (tf.constant(rng.normal(size=s)) for s in ((3, 4), (4,), (5, 4)))
    close(policy(X, Y), local_policy(X, Y), 1e-9)

    def loss(f: Callable[..., tf.Tensor], Y: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
        return lambda X: tf.reduce_sum(f(X, Y) ** 2)

    for Y_ in (Y, Ys):
        want = gradient(loss(local_policy, Y_), X)
        got, n = requests(policy, lambda Y_=Y_: gradient(loss(policy, Y_), X))
        close(got, want, 1e-9)
        assert n == 2, f"a gradient made {n} requests: the forward pass and one /vjp"
        close(jct.function(lambda X, Y_=Y_: gradient(loss(policy, Y_), X))(X), want, 1e-9)
    # The closed form too: Σ_i u_i ∂W_i/∂X_jk = (u_j − p_j Σ_i u_i)·y_k, with u = 2W.
    W = local_policy(X, Y).numpy()
    u, p = 2 * W, np.exp(W)
    close(gradient(loss(policy, Y), X), np.outer(u - p * u.sum(), Y.numpy()), 1e-9)
    close(
        gradient(lambda Y: tf.reduce_sum(policy(X, Y) ** 2), Y),
        gradient(lambda Y: tf.reduce_sum(local_policy(X, Y) ** 2), Y),
        1e-9,
    )
    V = tf.constant(rng.normal(size=(3, 4)))
    got, n = requests(policy, lambda: forward(lambda X: policy(X, Y), X, V))
    close(got, forward(lambda X: local_policy(X, Y), X, V), 1e-9)
    assert n == 2, f"forward mode made {n} requests: the forward pass and one /jvp"
    # Second order in X: a gradient of a gradient, and forward over reverse (a Hessian-vector product).
    for f in (lambda g: g, jct.function):  # eager, and in a graph
        close(f(twice(loss(policy, Ys)))(X), twice(loss(local_policy, Ys))(X), 1e-9)
        close(
            f(lambda X: forward(gradient_of(loss(policy, Y)), X, V))(X),
            forward(gradient_of(loss(local_policy, Y)), X, V),
            1e-9,
        )


CASES = {  # model -> (the input differentiated, the others)
    "policy_mlp": ("state", {}),
    "mlp": ("x", {}),
    "pair": ("a", {"b": np.linspace(-1, 1, 12).reshape(4, 3)}),
    "actions": ("state", {"action": np.array([0, 2, 1, 0], np.int32)}),
    "wide": ("x", {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_repository_model_under_the_tape_and_forward_mode(
    repository_client: tuple[Client, Path], name: str
) -> None:
    client, root = repository_client
    remote = client.model(name).as_tf()
    local = Local(root / name / "1")
    wrt, others = CASES[name]
    spec = next(t for t in client.model(name).card()["inputs"] if t["name"] == wrt)
    dtype = tf.as_dtype(spec["dtype"])
    rtol = 1e-9 if dtype == tf.float64 else 1e-5
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(4, *spec["shape"][1:])), dtype)
    fixed = {k: tf.constant(v, dtype if v.dtype.kind == "f" else v.dtype) for k, v in others.items()}

    def loss(f: Callable[[dict[str, Any]], dict[str, tf.Tensor]]) -> Callable[[tf.Tensor], tf.Tensor]:
        """Every output in the loss, weighted apart, so each output's cotangent counts."""
        return lambda x: sum(
            tf.reduce_sum(tf.cast(k + 1, y.dtype) * y**2)
            for k, (_, y) in enumerate(sorted(f({wrt: x, **fixed}).items()))
        )

    want = gradient(loss(local), x)
    got, n = requests(remote, lambda: gradient(loss(remote), x))
    close(got, want, rtol)
    assert n == 2, f"a gradient of {name} made {n} requests"
    close(jct.function(lambda x: gradient(loss(remote), x))(x), want, rtol)
    t = tf.constant(rng.normal(size=x.shape), dtype)
    got, n = requests(remote, lambda: forward(lambda x: remote({wrt: x, **fixed}), x, t))
    want = forward(lambda x: local({wrt: x, **fixed}), x, t)
    assert set(got) == set(want) and n == 2
    for k in want:
        close(got[k], want[k], rtol)
    rtol2 = rtol if dtype == tf.float64 else 10 * rtol  # float32: two passes of rounding
    close(twice(loss(remote))(x), twice(loss(local))(x), rtol2)
    close(forward(gradient_of(loss(remote)), x, t), forward(gradient_of(loss(local)), x, t), rtol2)


def test_gradients_in_a_models_variables_flow_to_the_users_optimizer(repository_client: tuple[Client, Path]) -> None:
    client, root = repository_client
    remote = client.model("wide").as_tf(variables=True)
    local = Local(root / "wide" / "1")
    x = tf.constant(np.random.default_rng(3).normal(size=(6, 5)))
    weights = remote.served_variables()  # tf.Variables holding the service's values
    for step in range(2):  # at the served values, then after a Keras optimizer's step on them
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(remote(weights, {"x": x})["y"] ** 2)
        got = tape.gradient(loss, weights)
        for mine, theirs in zip(weights.values(), local.fn.trainable_variables, strict=True):
            close(mine, theirs, 0 if step == 0 else 1e-9)  # the local model holds the same values
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(local({"x": x})["y"] ** 2)
        want = tape.gradient(loss, local.fn.trainable_variables)
        assert [v.shape for v in got.values()] == [v.shape for v in local.fn.trainable_variables]
        for g, w in zip(got.values(), want, strict=True):
            close(g, w, 1e-9)
        # The gradients are for the user's optimizer: it moves the weights the next request sends.
        tf.keras.optimizers.SGD(0.5).apply_gradients(zip(got.values(), weights.values(), strict=True))
        for theirs, w in zip(local.fn.trainable_variables, want, strict=True):
            theirs.assign_sub(0.5 * w)


def test_service_errors_surface_inside_the_users_program(repository_client: tuple[Client, Path]) -> None:
    client, _ = repository_client
    wide = client.model("wide").as_tf()
    bad = tf.constant(np.full((2, 5), np.nan))
    with pytest.raises(JacobianServiceError, match="finite"):
        gradient(lambda x: tf.reduce_sum(wide({"x": x})["y"]), bad)
    with pytest.raises(JacobianServiceError, match="finite"):
        jct.function(lambda x: gradient(lambda x: tf.reduce_sum(wide({"x": x})["y"]), x))(bad)
    with pytest.raises(tf.errors.OpError, match="finite"):  # a plain tf.function: TensorFlow's error, the message kept
        tf.function(lambda x: gradient(lambda x: tf.reduce_sum(wide({"x": x})["y"]), x))(bad)
    policy = client.as_tf()
    X, Y = tf.constant(np.arange(6.0).reshape(2, 3) / 6), tf.ones(3, tf.float64)
    with pytest.raises(JacobianServiceError, match="Mixed second derivatives"):
        with tf.GradientTape() as outer:
            outer.watch(Y)
            g = gradient(lambda X: tf.reduce_sum(policy(X, Y) ** 2), X)
        outer.gradient(g, Y)
    with pytest.raises(JacobianServiceError, match="Third derivatives"):
        gradient(lambda X: tf.reduce_sum(twice(lambda X: tf.reduce_sum(policy(X, Y) ** 2))(X)), X)


def test_the_readme_tensorflow_example_runs_and_is_right(
    repository_client: tuple[Client, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client, root = repository_client
    scope = readme_example("client-tensorflow", client.base_url, monkeypatch)
    local = Local(root / "policy_mlp" / "1")
    encoder, obs, actions = tf.Variable(scope["start"]), scope["obs"], scope["actions"]
    losses = []
    for _ in range(len(scope["losses"])):  # the same training, local
        with tf.GradientTape() as tape:
            log_probs = local({"state": obs @ encoder})["log_probs"]
            loss = -tf.reduce_mean(tf.gather(log_probs, actions, batch_dims=1))
        encoder.assign_sub(0.5 * tape.gradient(loss, encoder))
        losses.append(float(loss))
    close(scope["encoder"], encoder, 1e-5)
    close(scope["losses"], losses, 1e-5)
    assert losses[-1] < losses[0]
    assert capsys.readouterr().out.strip() == "True"
