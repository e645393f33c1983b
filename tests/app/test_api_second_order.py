"""/hessian and /hvp through the HTTP app, against the closed form."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from tests.support import oracles
from tests.support.clients import SEED
from tests.support.helpers import NPZ, load_npz, npz_bytes
from tests.support.oracles import assert_close


def test_seed_hessian(client: TestClient) -> None:
    body = client.post("/hessian", json={**SEED, "dtype": "float64"}).json()
    H = np.array(body["H"])
    assert H.shape == (2, 2, 4, 2, 4) and body["device"].startswith("/device:")
    assert_close(H, oracles.hessian(np.array(SEED["X"]), np.array(SEED["Y"])), 1e-9)


def test_hessian_batch_npz_equals_per_state(client: TestClient, rng: np.random.Generator) -> None:
    X, Y = rng.normal(size=(3, 5)), rng.normal(size=(2, 5))
    r = client.post("/hessian", content=npz_bytes(X=X, Y=Y), headers={"content-type": NPZ, "accept": NPZ})
    H = load_npz(r.content)["H"]
    assert H.shape == (2, 3, 3, 5, 3, 5)
    for b in range(2):
        assert_close(H[b], oracles.hessian(X, Y[b]), 1e-9)
        single = client.post("/hessian", json={"X": X.tolist(), "Y": Y[b].tolist(), "dtype": "float64"}).json()
        np.testing.assert_allclose(H[b], single["H"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(H, H.transpose(0, 1, 4, 5, 2, 3), rtol=0, atol=1e-15)  # symmetric


def test_hvp_equals_hessian_contracted_with_v(client: TestClient, rng: np.random.Generator) -> None:
    X, Y, V = rng.normal(size=(4, 6)), rng.normal(size=(3, 6)), rng.normal(size=(4, 6))
    body = client.post("/hvp", json={"X": X.tolist(), "Y": Y.tolist(), "V": V.tolist(), "dtype": "float64"}).json()
    HV = np.array(body["HV"])
    assert HV.shape == (3, 4, 4, 6)
    for b in range(3):
        assert_close(HV[b], np.einsum("ijklm,lm->ijk", oracles.hessian(X, Y[b]), V), 1e-9)
    H = np.array(client.post("/hessian", json={"X": X.tolist(), "Y": Y[0].tolist(), "dtype": "float64"}).json()["H"])
    assert_close(HV[0], np.einsum("ijklm,lm->ijk", H, V), 1e-9)


def test_hvp_npz_with_v(client: TestClient, rng: np.random.Generator) -> None:
    X, y, V = (rng.normal(size=s).astype(np.float32) for s in [(2, 3), (3,), (2, 3)])
    r = client.post("/hvp", content=npz_bytes(X=X, Y=y, V=V), headers={"content-type": NPZ, "accept": NPZ})
    out = load_npz(r.content)
    assert out["HV"].dtype == np.float32
    assert_close(out["HV"], np.einsum("ijklm,lm->ijk", oracles.hessian(X, y), V.astype(np.float64)), 1e-5)
