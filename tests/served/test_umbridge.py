"""UM-Bridge under /umbridge of `python -m app`, driven by UM-Bridge's own Python client (`umbridge`
from the package index): the models listed, their sizes, Evaluate, Gradient, ApplyJacobian and
ApplyHessian (mixed across two inputs too) of one example against the JAX networks (float64 to
1e-9, float32 to 1e-5) and of the built-in model against closed forms; each error in UM-Bridge's
shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import umbridge

from tests.support import servers
from tests.support.model_oracles import Oracle
from tests.support.wrappers import readme_example


@pytest.fixture(scope="module")
def url(repository_server: tuple[servers.LiveServer, Path]) -> str:
    return repository_server[0].url + "/umbridge"


def close(got: Any, want: Any, dtype: str) -> None:
    tol = 1e-9 if dtype == "float64" else 1e-5
    want = np.asarray(want, np.float64)
    np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())))


def test_the_models_and_their_sizes(url: str) -> None:
    assert set(umbridge.supported_models(url)) == {"policy", "actions", "mlp", "pair", "policy_mlp", "wide", "scalar"}
    pair = umbridge.HTTPModel(url, "pair")
    assert pair.get_input_sizes() == [3, 3] and pair.get_output_sizes() == [3, 3]
    assert pair.supports_evaluate() and pair.supports_gradient() and pair.supports_apply_hessian()
    policy = umbridge.HTTPModel(url, "policy")
    assert policy.get_input_sizes({"A": 2, "F": 3}) == [6, 3]  # X whole (shared), Y one state
    assert policy.get_output_sizes({"A": 2, "F": 3}) == [2]


EXAMPLES = [
    ("pair", "float32"),
    ("wide", "float64"),
    ("mlp", "float32"),
    ("policy_mlp", "float32"),
    ("actions", "float32"),
]


@pytest.mark.parametrize(("name", "dtype"), EXAMPLES)
def test_every_operation_of_one_example_equals_the_oracle(
    url: str, repository_server: tuple[servers.LiveServer, Path], name: str, dtype: str
) -> None:
    _, root = repository_server
    oracle = Oracle(name, root / name / "1")
    model = umbridge.HTTPModel(url, name)
    names = {"pair": ["a", "b"], "wide": ["x"], "mlp": ["x"], "policy_mlp": ["state"], "actions": ["action", "state"]}
    names = names[name]
    rng = np.random.default_rng(5)
    sizes = model.get_input_sizes()
    xs = [
        np.array([2.0]) if n == "action" else rng.normal(size=size).astype(dtype).astype(np.float64)
        for n, size in zip(names, sizes, strict=True)
    ]
    floating = [i for i, n in enumerate(names) if n != "action"]

    def example(args: Any) -> dict[str, Any]:
        # The action, a vector of one on the wire, is one int32 per example.
        return {
            n: (jnp.asarray(a).astype(jnp.int32).reshape(()) if n == "action" else a)[None]
            for n, a in zip(names, args, strict=True)
        }

    outs = sorted(oracle.net(oracle.params, example(xs)))

    def f(*args: Any) -> Any:  # one example, every output flat, in the card's order
        y = oracle.net(oracle.params, example(args))
        return [y[o][0].reshape(-1) for o in outs]

    for o, got in enumerate(model([x.tolist() for x in xs])):
        close(got, f(*xs)[o], dtype)
    for o in range(len(outs)):
        sens = rng.normal(size=model.get_output_sizes()[o])
        for i in floating:
            J = np.asarray(jax.jacrev(lambda *a, o=o: f(*a)[o], argnums=i)(*xs))
            close(model.gradient(o, i, [x.tolist() for x in xs], sens.tolist()), sens @ J, dtype)
            vec = rng.normal(size=sizes[i])
            close(model.apply_jacobian(o, i, [x.tolist() for x in xs], vec.tolist()), J @ vec, dtype)
            for i2 in floating:  # the second derivative in inputs i and i2 (mixed when they differ)

                def scalar(*a: Any, o: int = o, s: Any = sens) -> Any:
                    return jnp.dot(jnp.asarray(s), f(*a)[o])

                H = np.asarray(jax.jacrev(jax.grad(scalar, argnums=i2), argnums=i)(*xs))  # [i2 entries, i entries]
                vec2 = rng.normal(size=sizes[i2])
                got = model.apply_hessian(o, i, i2, [x.tolist() for x in xs], sens.tolist(), vec2.tolist())
                close(got, vec2 @ H, dtype)


def test_the_built_in_model_with_its_sizes_in_config(url: str) -> None:
    """W = log_softmax(X·y): ∂W_i/∂y_k = X_ik − Σ_j p_j X_jk; ∂²(s·W)/∂y∂y = −Σ_i s_i (Xᵀdiag(p)X − (pX)ᵀ(pX))."""
    model = umbridge.HTTPModel(url, "policy")
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(2, 3)), rng.normal(size=3)
    config = {"A": 2, "F": 3}
    z = X @ y
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    (W,) = model([X.ravel().tolist(), y.tolist()], config)
    close(W, z - np.log(np.exp(z).sum()), "float64")
    sens = rng.normal(size=2)
    J_y = X - p @ X
    close(model.gradient(0, 1, [X.ravel().tolist(), y.tolist()], sens.tolist(), config), sens @ J_y, "float64")
    vec = rng.normal(size=3)
    H = -(X.T @ np.diag(p) @ X - np.outer(p @ X, p @ X))
    got = model.apply_hessian(0, 1, 1, [X.ravel().tolist(), y.tolist()], sens.tolist(), vec.tolist(), config)
    close(got, sens.sum() * (H @ vec), "float64")


@pytest.mark.parametrize(
    ("path", "body", "kind", "says"),
    [
        ("Evaluate", {"name": "nothing", "input": [[1.0]]}, "ModelNotFound", "Unknown model 'nothing'"),
        ("Evaluate", {"name": "pair", "input": [[1.0, 2.0]]}, "InvalidInput", "input must be a list of 2 vectors"),
        (
            "Evaluate",
            {"name": "pair", "input": [[1.0], [1.0, 2, 3]]},
            "InvalidInput",
            "input a must be a flat list of 3",
        ),
        (
            "InputSizes",
            {"name": "policy"},
            "InvalidInput",
            "X's size at axis 0 is open in the signature of model 'policy': give it in config (\"A\")",
        ),
        (
            "Gradient",
            {"name": "actions", "outWrt": 0, "inWrt": 0, "input": [[1], [0.1] * 4], "sens": [1.0]},
            "InvalidInput",
            "Input 0 (action) is int32",
        ),
        (
            "ApplyJacobian",
            {"name": "pair", "outWrt": 5, "inWrt": 0, "input": [[1.0] * 3] * 2, "vec": [1.0] * 3},
            "InvalidInput",
            "outWrt must be an index from 0 to 1",
        ),
    ],
)
def test_each_error_in_umbridges_shape(url: str, path: str, body: dict[str, Any], kind: str, says: str) -> None:
    r = httpx.post(f"{url}/{path}", json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == kind and says in error["message"], error


def built_in(X: np.ndarray, y: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """The closed forms of the built-in model at (X, y): W, ∂W_0/∂y, and the mixed second
    derivative ∂/∂X_jk (∂W_0/∂y · t) = δ_0j t_k − p_j t_k − p_j (v_j − p·v) y_k, v = X t."""
    z = X @ y
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    v = X @ t
    mixed = np.eye(len(z))[0][:, None] * t - p[:, None] * t - (p * (v - p @ v))[:, None] * y
    return {"W": z - np.log(np.exp(z).sum()), "dW0_dy": X[0] - p @ X, "Jy_t": X @ t - p @ X @ t, "mixed": mixed}


def test_the_readme_example_runs_and_is_right(
    repository_server: tuple[servers.LiveServer, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scope = readme_example("umbridge-python", repository_server[0].url, monkeypatch)
    X, y = np.reshape(scope["X"], (2, 4)), np.asarray(scope["y"])
    want = built_in(X, y, np.array([1.0, 0.0, 0.0, 0.0]))
    close(scope["W"], want["W"], "float64")
    close(scope["dW0_dy"], want["dW0_dy"], "float64")
    close(scope["mixed"], want["mixed"].ravel(), "float64")
    assert capsys.readouterr().out.strip() == "2 4 8"


def test_the_docs_page_has_every_route_with_an_example_that_is_right(
    url: str, repository_server: tuple[servers.LiveServer, Path]
) -> None:
    spec = httpx.get(repository_server[0].url + "/openapi.json").json()
    answers = {}
    for path in ("InputSizes", "OutputSizes", "ModelInfo", "Evaluate", "Gradient", "ApplyJacobian", "ApplyHessian"):
        entry = spec["paths"][f"/umbridge/{path}"]["post"]
        assert entry["tags"] == ["UM-Bridge"] and entry["summary"] and entry["description"], path
        body = entry["requestBody"]["content"]["application/json"]["example"]
        r = httpx.post(f"{url}/{path}", json=body, timeout=30)
        assert r.status_code == 200, (path, r.text)
        answers[path] = r.json()
    assert "/umbridge/Info" in spec["paths"]
    example = spec["paths"]["/umbridge/ApplyHessian"]["post"]["requestBody"]["content"]["application/json"]["example"]
    X, y = np.reshape(example["input"][0], (2, 4)), np.asarray(example["input"][1])
    want = built_in(X, y, np.asarray(example["vec"]))
    assert answers["InputSizes"] == {"inputSizes": [8, 4]} and answers["OutputSizes"] == {"outputSizes": [2]}
    assert all(answers["ModelInfo"]["support"].values())
    close(answers["Evaluate"]["output"], [want["W"]], "float64")
    close(answers["Gradient"]["output"], want["dW0_dy"], "float64")  # sens = e_0, in y
    close(answers["ApplyJacobian"]["output"], want["Jy_t"], "float64")  # vec = e_0, in y
    close(answers["ApplyHessian"]["output"], want["mixed"].ravel(), "float64")
