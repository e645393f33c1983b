"""POST /vjp and /jvp: derivative products without forming J, checked against the closed forms
and against POST /jacobian's J contracted by hand, in both transports, every shape combination."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.support import oracles
from tests.support.helpers import NPZ, load_npz, npz_bytes
from tests.support.oracles import assert_close

TOL = {"float64": 1e-9, "float32": 1e-5}


def served_jacobian(client: TestClient, X: np.ndarray, states: np.ndarray) -> np.ndarray:
    """J from POST /jacobian, one per state (B×A×A×F), to contract by hand."""
    r = client.post("/jacobian", json={"X": X.tolist(), "Y": states.tolist(), "dtype": "float64"})
    assert r.status_code == 200, r.text
    return np.array(r.json()["J"])


def _problem(rng: np.random.Generator, A: int = 4, F: int = 6, B: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(A, F))
    Y = rng.normal(size=(B, F) if B else F) / np.sqrt(F)
    return X, Y


@pytest.mark.parametrize("B", [None, 3])
@pytest.mark.parametrize("K", [None, 2])
def test_vjp_matches_the_closed_form_and_the_contracted_jacobian(
    client: TestClient, rng: np.random.Generator, B: int | None, K: int | None
) -> None:
    X, Y = _problem(rng, B=B)
    states = Y if B else Y[None]
    U = rng.normal(size=((K,) if K else ()) + ((B,) if B else ()) + (X.shape[0],))
    r = client.post("/vjp", json={"X": X.tolist(), "Y": Y.tolist(), "U": U.tolist(), "dtype": "float64"})
    assert r.status_code == 200, r.text
    UJ = np.array(r.json()["UJ"])
    assert UJ.shape == ((K,) if K else ()) + ((B,) if B else ()) + X.shape
    Us = U.reshape((K or 1, B or 1, X.shape[0]))
    got = UJ.reshape((K or 1, B or 1, *X.shape))
    J = served_jacobian(client, X, states)
    for k in range(K or 1):
        for b, y in enumerate(states):
            assert_close(got[k, b], oracles.vjp(X, y, Us[k, b]), 1e-9)
            assert_close(got[k, b], np.einsum("i,ijk->jk", Us[k, b], J[b]), 1e-9)


def test_vjp_summed_over_states_is_the_policy_gradient(client: TestClient, rng: np.random.Generator) -> None:
    X, Y = _problem(rng, A=5, F=7, B=4)
    actions, advantages = np.array([0, 3, 1, 3]), rng.normal(size=4)
    U = np.zeros((4, 5))
    U[np.arange(4), actions] = advantages  # advantage at the chosen action, one row per state
    body = {"X": X.tolist(), "Y": Y.tolist(), "U": U.tolist(), "sum_states": True, "dtype": "float64"}
    r = client.post("/vjp", json=body)
    assert r.status_code == 200, r.text
    want = sum(advantages[b] * oracles.jacobian(X, Y[b])[actions[b]] for b in range(4))  # Σ_b A_b ∇_X log π(a_b|s_b)
    assert_close(np.array(r.json()["UJ"]), want, 1e-9)


@pytest.mark.parametrize("B", [None, 2])
@pytest.mark.parametrize("K", [None, 3])
def test_jvp_matches_the_closed_form_and_the_contracted_jacobian(
    client: TestClient, rng: np.random.Generator, B: int | None, K: int | None
) -> None:
    X, Y = _problem(rng, B=B)
    states = Y if B else Y[None]
    V = rng.normal(size=((K,) if K else ()) + X.shape)
    r = client.post("/jvp", json={"X": X.tolist(), "Y": Y.tolist(), "V": V.tolist(), "dtype": "float64"})
    assert r.status_code == 200, r.text
    JV = np.array(r.json()["JV"])
    assert JV.shape == ((K,) if K else ()) + ((B,) if B else ()) + (X.shape[0],)
    got = JV.reshape((K or 1, B or 1, X.shape[0]))
    Vs = V.reshape((K or 1, *X.shape))
    J = served_jacobian(client, X, states)
    for k in range(K or 1):
        for b, y in enumerate(states):
            assert_close(got[k, b], oracles.jvp(X, y, Vs[k]), 1e-9)
            assert_close(got[k, b], np.einsum("ijk,jk->i", J[b], Vs[k]), 1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_npz_both_ways_with_sum_states_as_a_query_parameter(
    client: TestClient, rng: np.random.Generator, dtype: str
) -> None:
    X, Y = _problem(rng, B=3)
    U = rng.normal(size=(2, 3, 4))
    body = npz_bytes(X=X.astype(dtype), Y=Y.astype(dtype), U=U.astype(dtype))
    r = client.post("/vjp?sum_states=true", content=body, headers={"content-type": NPZ, "accept": NPZ})
    assert r.status_code == 200, r.text
    out = load_npz(r.content)
    assert out["UJ"].dtype == dtype and out["UJ"].shape == (2, 4, 6)
    for k in range(2):
        want = sum(oracles.vjp(X, Y[b], U[k, b]) for b in range(3))
        assert_close(out["UJ"][k], want, TOL[dtype], float(np.abs(want).max()))
    V = rng.normal(size=(4, 6))
    r = client.post(
        "/jvp",
        content=npz_bytes(X=X.astype(dtype), Y=Y.astype(dtype), V=V.astype(dtype)),
        headers={"content-type": NPZ, "accept": NPZ},
    )
    assert r.status_code == 200 and load_npz(r.content)["JV"].shape == (3, 4)


@pytest.mark.parametrize(
    "path,extra,loc",
    [
        ("/vjp", {"U": [1.0, 2.0, 3.0]}, ["U"]),  # not shaped like W (A = 2)
        ("/vjp", {"U": [[1.0, 2.0]] * 3, "Y": [[1.0, 2.0, 3.0, 4.0]] * 2}, ["U"]),  # batch of 2, U says 3
        ("/vjp", {"U": [1.0, 2.0], "sum_states": True}, ["sum_states"]),  # one state
        ("/vjp", {"U": [[1.0, 2.0], [3.0]]}, ["U"]),  # ragged
        ("/jvp", {"V": [[1.0, 2.0, 3.0, 4.0]]}, ["V"]),  # one row, X has two
        ("/jvp", {"V": [[[1.0, 2.0, 3.0, 4.0]] * 2] * 2 + [[[1.0]] * 2]}, ["V"]),  # ragged K stack
    ],
)
def test_bad_products_get_422_naming_the_input(client: TestClient, path: str, extra: dict, loc: list) -> None:  # type: ignore[type-arg]
    body = {"X": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]], "Y": [1.0, 2.0, 3.0, 4.0], **extra}
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["loc"][: len(loc)] == loc


@pytest.mark.parametrize("path,name", [("/vjp", "U"), ("/jvp", "V")])
def test_zero_products_and_non_finite_values_are_refused(client: TestClient, path: str, name: str) -> None:
    X = np.ones((2, 3))
    empty = np.zeros((0, 2)) if name == "U" else np.zeros((0, 2, 3))
    r = client.post(path, content=npz_bytes(X=X, Y=np.ones(3), **{name: empty}), headers={"content-type": NPZ})
    assert r.status_code == 422 and "K = 0" in r.json()["message"]
    bad = np.ones(2) if name == "U" else np.ones((2, 3))
    bad.flat[0] = np.nan
    r = client.post(path, content=npz_bytes(X=X, Y=np.ones(3), **{name: bad}), headers={"content-type": NPZ})
    assert r.status_code == 422 and "NaN" in r.json()["message"]


def test_a_vjp_at_a_size_jacobian_must_refuse(client: TestClient, rng: np.random.Generator) -> None:
    A, F = 1024, 2048  # J would be 2.1·10⁹ numbers; X is 8 MiB as float32
    X = rng.normal(size=(A, F)).astype(np.float32)
    Y = (rng.normal(size=F) / np.sqrt(F)).astype(np.float32)
    U = np.zeros(A, np.float32)
    U[7] = 1.0
    headers = {"content-type": NPZ, "accept": NPZ}
    assert client.post("/jacobian", content=npz_bytes(X=X, Y=Y), headers=headers).status_code == 413
    r = client.post("/vjp", content=npz_bytes(X=X, Y=Y, U=U), headers=headers)
    assert r.status_code == 200, r.text
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    want = oracles.vjp(X64, Y64, U.astype(np.float64))
    assert_close(load_npz(r.content)["UJ"], want, 1e-5, float(np.abs(want).max()))
