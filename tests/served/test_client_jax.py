"""`jacobian_client.jax` against a live server: JAX's transformations through the remote built-in
model and each example repository model equal the same transformations of the local JAX networks
(`tests.support.model_oracles`), with the requests counted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jacobian_client import Client, JacobianServiceError

from tests.support import model_oracles
from tests.support.wrappers import close, readme_example, requests

jax.config.update("jax_enable_x64", True)


def local_policy(X: jax.Array, Y: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(Y @ X.T)


def test_the_built_in_model_under_every_transformation(repository_client: tuple[Client, Path]) -> None:
    client, _ = repository_client
    policy = client.as_jax()
    rng = np.random.default_rng(1)
    X, Y, Ys = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(5, 4))
    close(policy(X, Y), local_policy(X, Y), 1e-9)
    for transform in (jax.jacrev, jax.jacfwd):
        close(transform(policy, argnums=(0, 1))(X, Ys)[1], transform(local_policy, argnums=(0, 1))(X, Ys)[1], 1e-9)
        got, n = requests(policy, lambda t=transform: jax.jit(t(policy))(X, Y))
        close(got, transform(local_policy)(X, Y), 1e-9)
        assert n == 1, f"jit({transform.__name__}) made {n} requests"

    def loss(f: Callable[..., jax.Array]) -> Callable[[jax.Array], jax.Array]:
        return lambda X: jnp.sum(f(X, Ys) ** 2)

    close(jax.grad(loss(policy))(X), jax.grad(loss(local_policy))(X), 1e-9)
    close(
        jax.grad(lambda Y: jnp.sum(policy(X, Y) ** 2))(Y), jax.grad(lambda Y: jnp.sum(local_policy(X, Y) ** 2))(Y), 1e-9
    )
    close(jax.hessian(policy)(X, Y), jax.hessian(local_policy)(X, Y), 1e-9)
    # In Y too, the built-in's Hessian and products now being served as any model's.
    close(jax.hessian(policy, argnums=1)(X, Ys), jax.hessian(local_policy, argnums=1)(X, Ys), 1e-9)
    v = rng.normal(size=4)
    _, tangent = jax.jvp(lambda Y: policy(X, Y), (Y,), (v,))
    close(tangent, jax.jvp(lambda Y: local_policy(X, Y), (Y,), (v,))[1], 1e-9)
    close(
        jax.grad(lambda X: jnp.sum(jax.grad(loss(policy))(X) ** 2))(X),
        jax.grad(lambda X: jnp.sum(jax.grad(loss(local_policy))(X) ** 2))(X),
        1e-9,
    )
    # The closed form too: ∂W_i/∂X_jk = (δ_ij − p_j)·y_k.
    p = np.exp(local_policy(X, Y))
    close(jax.jit(jax.jacrev(policy))(X, Y), (np.eye(3) - p)[:, :, None] * Y, 1e-9)

    _, pullback = jax.vjp(lambda X: policy(X, Y), X)
    _, local_pullback = jax.vjp(lambda X: local_policy(X, Y), X)
    U = rng.normal(size=(64, 3))
    got, n = requests(policy, lambda: jax.vmap(pullback)(U))
    close(got[0], jax.vmap(local_pullback)(U)[0], 1e-9)
    assert n == 1, f"vmap of 64 VJPs made {n} requests"


CASES = {  # model -> (the input differentiated, the others, the output)
    "policy_mlp": ("state", {}, "log_probs"),
    "mlp": ("x", {}, "y"),
    "pair": ("a", {"b": np.linspace(-1, 1, 12).reshape(4, 3)}, "s"),
    "actions": ("state", {"action": np.array([0, 2, 1, 0], np.int32)}, "log_prob"),
    "wide": ("x", {}, "y"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_repository_model_under_every_transformation(repository_client: tuple[Client, Path], name: str) -> None:
    client, root = repository_client
    remote = client.model(name).as_jax()
    oracle = model_oracles.Oracle(name, root / name / "1")
    wrt, others, out = CASES[name]
    card = client.model(name).card()
    spec = next(t for t in card["inputs"] if t["name"] == wrt)
    dtype = np.dtype(spec["dtype"])
    rtol = 1e-9 if dtype == np.float64 else 1e-5
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, *spec["shape"][1:])).astype(dtype)
    fixed = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in others.items()}

    def f(x: jax.Array) -> jax.Array:
        return remote({wrt: x, **fixed})[out]

    def g(x: jax.Array) -> jax.Array:  # the same network, local, in float64
        return oracle.net(oracle.params, {wrt: x.astype(jnp.float64), **oracle._as64(fixed)})[out]

    close(f(x), g(x), rtol)
    for transform in (jax.jacrev, jax.jacfwd, jax.hessian):
        got, n = requests(remote, lambda t=transform: jax.jit(t(f))(x))
        close(got, transform(g)(x), rtol)
        assert n == 1, f"jit({transform.__name__}) of {name} made {n} requests"
    close(jax.grad(lambda x: jnp.sum(f(x) ** 2))(x), jax.grad(lambda x: jnp.sum(g(x) ** 2))(x), rtol)

    def twice(h: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:  # reverse over reverse: /hvp
        return jax.grad(lambda x: jnp.sum(jax.grad(lambda x: jnp.sum(h(x)))(x) ** 2))

    close(twice(f)(x), twice(g)(x), rtol if dtype == np.float64 else 10 * rtol)  # float32: two passes of rounding
    _, pullback = jax.vjp(f, x)
    _, local_pullback = jax.vjp(g, x)
    U = rng.normal(size=(16, *f(x).shape)).astype(dtype)
    got, n = requests(remote, lambda: jax.vmap(pullback)(U))
    close(got[0], jax.vmap(local_pullback)(U.astype(np.float64))[0], rtol)
    assert n == 1


def test_gradients_in_a_models_variables_flow_to_the_users_optimizer(repository_client: tuple[Client, Path]) -> None:
    client, root = repository_client
    remote = client.model("wide").as_jax(variables=True)
    oracle = model_oracles.Oracle("wide", root / "wide" / "1")
    x = np.random.default_rng(3).normal(size=(6, 5))

    def loss(net: Callable[..., Any], params: Any) -> jax.Array:
        return jnp.sum(net(params, {"x": x})["y"] ** 2)

    served = remote.served_variables()  # the service's values, as the SavedModel holds them
    assert set(served) == set(oracle.params)
    for k, v in oracle.params.items():
        close(served[k], v, 0)
    theta = {k: v * 1.25 for k, v in served.items()}  # the user's parameters: computed at these
    got, n = requests(remote, lambda: jax.jit(jax.grad(lambda v: loss(remote, v)))(theta))
    want = jax.grad(lambda v: loss(oracle.net, v))(oracle.at(theta).params)
    assert set(got) == set(want)
    assert n == 2, n  # the forward pass (the loss needs y) and one VJP in every variable
    for k in want:
        close(got[k], want[k], 1e-9)


def test_a_0_d_variable_gets_its_gradient(repository_client: tuple[Client, Path]) -> None:
    """y = s·x + s² with s a 0-d variable (tests/support/edge_models.py): ∂/∂s Σ y² = Σ 2y(x + 2s)."""
    client, _ = repository_client
    remote = client.model("scalar").as_jax(variables=True)
    x = np.random.default_rng(4).normal(size=(5, 3))
    variables = remote.served_variables()
    assert {k: np.shape(v) for k, v in variables.items()} == {"s": ()}
    assert float(variables["s"]) == 1.5  # the server's own value
    for s in (1.5, -0.75):  # at the server's value, and at the caller's
        got = jax.grad(lambda v: jnp.sum(remote(v, {"x": x})["y"] ** 2))({"s": jnp.asarray(s)})["s"]
        close(np.asarray(got), np.sum(2 * (s * x + s * s) * (x + 2 * s)), 1e-9)


def test_service_errors_surface_inside_the_users_program(repository_client: tuple[Client, Path]) -> None:
    client, _ = repository_client
    wide = client.model("wide").as_jax()
    bad = np.full((2, 5), np.nan)
    with pytest.raises(JacobianServiceError, match="finite"):
        jax.grad(lambda x: jnp.sum(wide({"x": x})["y"]))(bad)
    with pytest.raises(Exception, match="finite"):  # under jit JAX wraps the callback's error
        jax.jit(jax.grad(lambda x: jnp.sum(wide({"x": x})["y"])))(bad).block_until_ready()
    pair = client.model("pair").as_jax()
    a = np.ones((2, 3), np.float32)
    with pytest.raises(JacobianServiceError, match="one input at a time"):
        jax.hessian(lambda a: jnp.sum(pair({"a": a, "b": a})["s"]))(a)


def test_the_readme_jax_training_loop_equals_the_same_loop_run_locally(
    repository_client: tuple[Client, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """100 policy-gradient steps with optax through the service, and the same 100 steps on the same
    network written in JAX from the SavedModel's float32 values: the same parameters, moved."""
    client, root = repository_client
    scope = readme_example("client-jax", client.base_url, monkeypatch)
    oracle = model_oracles.Oracle("policy_mlp", root / "policy_mlp" / "1")
    start = {k: jnp.asarray(v, jnp.float32) for k, v in oracle.params.items()}  # float32, as served
    states, actions, advantages = scope["states"], scope["actions"], scope["advantages"]

    def loss(theta: Any) -> jax.Array:
        log_probs = model_oracles.policy_mlp(theta, {"state": states})["log_probs"]
        return -jnp.mean(advantages * jnp.take_along_axis(log_probs, actions[:, None], axis=1)[:, 0])

    optimizer = optax.sgd(0.1)
    theta, opt_state, grad = start, optimizer.init(start), jax.jit(jax.grad(loss))
    for _ in range(100):
        updates, opt_state = optimizer.update(grad(theta), opt_state)
        theta = optax.apply_updates(theta, updates)
    trained = scope["theta"]
    assert set(trained) == set(theta)
    for k in theta:
        close(trained[k], theta[k], 1e-5)
    assert max(float(jnp.abs(theta[k] - start[k]).max()) for k in theta) > 0.05  # it moved
    assert float(loss(theta)) < float(loss(start))
    assert capsys.readouterr().out.strip() == "True"


def test_a_basis_goes_to_jacobian(repository_client: tuple[Client, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """jacrev and jacfwd are one `/jacobian` request each, not K products: never a larger answer
    (B times smaller for a per-example Jacobian), and no K vectors on the wire."""
    client, _ = repository_client
    policy, mlp = client.as_jax(), client.model("mlp").as_jax()
    routes: list[str] = []
    for remote in (policy.remote, mlp.remote):
        for route in ("_jacobian", "_vjp", "_jvp"):
            served = getattr(remote, route)
            monkeypatch.setattr(
                remote, route, lambda *a, route=route, served=served: routes.append(route) or served(*a)
            )
    rng = np.random.default_rng(4)
    X, Y, x = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(5, 64)).astype(np.float32)
    cases = [
        (lambda: jax.jit(jax.jacrev(policy))(X, Y), "_jacobian"),
        (lambda: jax.jit(jax.jacfwd(policy))(X, Y), "_jacobian"),
        (lambda: jax.jit(jax.jacrev(lambda x: mlp({"x": x})["y"]))(x), "_jacobian"),
        (lambda: jax.jit(jax.jacfwd(lambda x: mlp({"x": x})["y"]))(x), "_jacobian"),
    ]
    for run, route in cases:
        routes.clear()
        run()
        assert routes == [route], (route, routes)
