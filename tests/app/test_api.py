"""The HTTP contract through the real ASGI app: values, transports, batches, health."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.support import oracles
from tests.support.clients import SEED, wait_ready
from tests.support.helpers import NPZ, load_npz, npz_bytes
from tests.support.oracles import assert_close


def test_seed_request_returns_w_and_full_jacobian(client: TestClient) -> None:
    r = client.post("/jacobian", json=SEED)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    X, y = np.array(SEED["X"]), np.array(SEED["Y"])
    assert body["dtype"] == "float32" and body["device"].startswith("/device:")
    assert_close(np.array(body["W"]), oracles.log_softmax(X, y), 1e-5)
    J = np.array(body["J"])
    assert J.shape == (2, 2, 4)  # one X-shaped gradient per output W_i
    assert_close(J, oracles.jacobian(X, y), 1e-5)
    assert "J_Y" not in body


def test_float64_is_tight(client: TestClient, rng: np.random.Generator) -> None:
    X, y = rng.normal(size=(5, 9)), rng.normal(size=9)
    r = client.post("/jacobian", json={"X": X.tolist(), "Y": y.tolist(), "dtype": "float64"})
    body = r.json()
    assert body["dtype"] == "float64"
    assert_close(np.array(body["J"]), oracles.jacobian(X, y), 1e-9)
    assert_close(np.array(body["W"]), oracles.log_softmax(X, y), 1e-9)


def test_batch_of_states_equals_each_state(client: TestClient, rng: np.random.Generator) -> None:
    X, Y = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    batch = client.post("/jacobian", json={"X": X.tolist(), "Y": Y.tolist(), "dtype": "float64"}).json()
    assert np.array(batch["J"]).shape == (3, 4, 4, 6) and np.array(batch["W"]).shape == (3, 4)
    for b in range(3):
        single = client.post("/jacobian", json={"X": X.tolist(), "Y": Y[b].tolist(), "dtype": "float64"}).json()
        np.testing.assert_allclose(batch["J"][b], single["J"], rtol=1e-12, atol=1e-15)
        assert_close(np.array(batch["J"][b]), oracles.jacobian(X, Y[b]), 1e-9)


@pytest.mark.parametrize("wrt", [["X", "Y"], ["Y"]])
def test_wrt_y_adds_the_jacobian_in_y(client: TestClient, rng: np.random.Generator, wrt: list[str]) -> None:
    X, y = rng.normal(size=(3, 5)), rng.normal(size=5)
    body = client.post("/jacobian", json={"X": X.tolist(), "Y": y.tolist(), "dtype": "float64", "wrt": wrt}).json()
    assert_close(np.array(body["J_Y"]), oracles.jacobian_y(X, y), 1e-9)
    assert ("J" in body) == ("X" in wrt)


def test_huge_logits_give_exact_saturated_derivatives(client: TestClient) -> None:
    body = client.post("/jacobian", json={"X": [[1000.0], [-1000.0]], "Y": [2.0], "wrt": ["X", "Y"]}).json()
    assert body["W"][0] == pytest.approx(0.0, abs=1e-6) and body["W"][1] == pytest.approx(-4000.0, rel=1e-6)
    # p = (1, 0) exactly: J[i][j][0] = (δ_ij − p_j)·2, J_Y[i] = X_i − X_0.
    assert body["J"] == [[[0.0], [0.0]], [[-2.0], [2.0]]] and body["J_Y"] == [[0.0], [-2000.0]]
    H = client.post("/hessian", json={"X": [[1000.0], [-1000.0]], "Y": [2.0]}).json()["H"]
    assert not np.any(H)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_readme_headline_64_by_512_fits_in_json_and_is_right(
    client: TestClient, rng: np.random.Generator, dtype: str
) -> None:
    X, y = (rng.normal(size=(64, 512)) * 0.1).astype(dtype), rng.normal(size=512).astype(dtype)
    r = client.post("/jacobian", json={"X": X.tolist(), "Y": y.tolist(), "dtype": dtype})
    assert r.status_code == 200
    J = np.array(r.json()["J"])
    assert J.shape == (64, 64, 512)
    assert_close(J, oracles.jacobian(X, y), {"float32": 1e-5, "float64": 1e-9}[dtype])


def test_npz_round_trip(client: TestClient, rng: np.random.Generator) -> None:
    X, Y = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    r = client.post("/jacobian", content=npz_bytes(X=X, Y=Y), headers={"content-type": NPZ, "accept": NPZ})
    assert r.status_code == 200 and r.headers["content-type"] == NPZ
    out = load_npz(r.content)
    assert out["J"].dtype == np.float64 and str(out["dtype"]) == "float64"
    assert str(out["device"]).startswith("/device:")
    for b in range(2):
        assert_close(out["J"][b], oracles.jacobian(X, Y[b]), 1e-9)
        assert_close(out["W"][b], oracles.log_softmax(X, Y[b]), 1e-9)


def test_npz_dtype_follows_arrays_unless_query_says(client: TestClient, rng: np.random.Generator) -> None:
    X, y = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    body = npz_bytes(X=X, Y=y)
    as_is = load_npz(client.post("/jacobian", content=body, headers={"content-type": NPZ, "accept": NPZ}).content)
    assert as_is["J"].dtype == np.float32
    widened = client.post("/jacobian?dtype=float64", content=body, headers={"content-type": NPZ})
    assert widened.json()["dtype"] == "float64"
    assert_close(np.array(widened.json()["J"]), oracles.jacobian(X, y), 1e-9)
    mixed = client.post("/jacobian", content=npz_bytes(X=X, Y=y.astype(np.float64)), headers={"content-type": NPZ})
    assert mixed.json()["dtype"] == "float64"


@pytest.mark.parametrize("wrt,names", [("X", {"J"}), ("Y", {"J_Y"}), ("X,Y", {"J", "J_Y"})])
def test_npz_bodies_name_wrt_in_the_query(
    client: TestClient, rng: np.random.Generator, wrt: str, names: set[str]
) -> None:
    X, y = rng.normal(size=(3, 5)), rng.normal(size=5)
    r = client.post(
        "/jacobian", params={"wrt": wrt}, content=npz_bytes(X=X, Y=y), headers={"content-type": NPZ, "accept": NPZ}
    )
    assert r.status_code == 200, r.text
    got = load_npz(r.content)
    assert set(got) - {"W", "dtype", "device"} == names
    if "J" in names:
        assert_close(got["J"], oracles.jacobian(X, y), 1e-9)
    if "J_Y" in names:
        assert_close(got["J_Y"], oracles.jacobian_y(X, y), 1e-9)


@pytest.mark.parametrize("wrt", ["Z", "Y,X", ""])
def test_a_bad_wrt_query_is_refused(client: TestClient, wrt: str) -> None:
    body = npz_bytes(X=np.ones((2, 4)), Y=np.ones(4))
    r = client.post("/jacobian", params={"wrt": wrt}, content=body, headers={"content-type": NPZ})
    assert r.status_code == 422 and "wrt" in r.json()["message"]


def test_json_in_npz_out(client: TestClient) -> None:
    r = client.post("/jacobian", json={**SEED, "dtype": "float64"}, headers={"accept": NPZ})
    out = load_npz(r.content)
    assert_close(out["J"], oracles.jacobian(np.array(SEED["X"]), np.array(SEED["Y"])), 1e-9)


def test_health_live(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}


def test_health_ready_names_tensorflow_and_devices(client: TestClient) -> None:
    r = client.get("/health/ready")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ready"
    assert body["tensorflow"].startswith("2.")
    assert "/device:CPU:0" in body["devices"]


def test_ready_is_503_until_the_engine_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from app.config import Settings
    from app.http import app as app_module

    loaded, release = threading.Event(), threading.Event()
    load = app_module._load_engine

    def held_load(settings: Settings):  # type: ignore[no-untyped-def]
        release.wait(60)  # TensorFlow's import and a repository's calibration take seconds
        engine = load(settings)
        loaded.set()
        return engine

    monkeypatch.setattr(app_module, "_load_engine", held_load)
    with TestClient(app_module.create_app(Settings())) as c:
        # The engine loads in the background, so probes meanwhile see it still starting.
        first = c.get("/health/ready")
        assert first.status_code == 503 and first.json()["status"] == "starting"
        early = c.post("/jacobian", json=SEED)
        assert early.status_code == 503 and early.json()["code"] == "not_ready"
        release.set()
        assert loaded.wait(60)
        wait_ready(c)
        assert c.post("/jacobian", json=SEED).status_code == 200
