"""No retracing: 1000 mixed-size requests leave the tf.function trace count where it was."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from tests import oracles
from tests.helpers import NPZ, load_npz
from tests.oracles import assert_close


def test_trace_count_flat_over_1000_mixed_requests(client: TestClient, engine) -> None:
    rng = np.random.default_rng(7)
    before = engine.trace_count
    assert before > 0
    for n in range(1000):
        A, F = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        B = int(rng.integers(0, 4))  # 0: a single state
        dtype = "float64" if n % 2 else "float32"
        X = rng.normal(size=(A, F))
        Y = rng.normal(size=(B, F) if B else F)
        path = ("/jacobian", "/hessian", "/hvp")[n % 3]
        body = {"X": X.tolist(), "Y": Y.tolist(), "dtype": dtype}
        if path == "/hvp":
            body["V"] = rng.normal(size=(A, F)).tolist()
        r = client.post(path, json=body, headers={"accept": NPZ} if n % 5 == 0 else {})
        assert r.status_code == 200, r.text
        out = load_npz(r.content) if n % 5 == 0 else r.json()
        if path == "/jacobian":
            y0 = Y[0] if B else Y
            J = np.asarray(out["J"])
            assert_close(J[0] if B else J, oracles.jacobian(X, y0), 1e-9 if dtype == "float64" else 1e-5)
    assert engine.trace_count == before
