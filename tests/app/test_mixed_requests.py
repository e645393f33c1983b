"""600 mixed requests through the real app: every answer checked against its closed form, and
XLA compiles no more than `xla_max_shapes` shapes, each one asked for, which is what bounds its
cache and start-up cost under varied traffic (which shapes, exactly: `tests/unit/test_xla.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.support import oracles
from tests.support.clients import started_client
from tests.support.helpers import NPZ, load_npz
from tests.support.oracles import assert_close

XLA_AFTER, XLA_MAX_SHAPES = 2, 12
OPS = {"/jacobian": "jacobian", "/hessian": "hessian", "/hvp": "hvp"}


@pytest.fixture(scope="module")
def xla_client() -> Iterator[TestClient]:
    yield from started_client(Settings(xla_after=XLA_AFTER, xla_max_shapes=XLA_MAX_SHAPES))


def expected(path: str, X: np.ndarray, y: np.ndarray, V: np.ndarray) -> tuple[str, np.ndarray]:
    if path == "/jacobian":
        return "J", oracles.jacobian(X, y)
    if path == "/hessian":
        return "H", oracles.hessian(X, y)
    return "HV", oracles.hvp(X, y, V)


def test_600_mixed_requests_are_right_and_compile_only_hot_shapes(xla_client: TestClient) -> None:
    rng = np.random.default_rng(7)
    requested: set[tuple] = set()
    for n in range(600):
        A, F = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        B = int(rng.integers(0, 4))  # 0: a single state
        dtype = "float64" if n % 2 else "float32"
        X, V = rng.normal(size=(A, F)), rng.normal(size=(A, F))
        Y = rng.normal(size=(B, F) if B else F)
        path = ("/jacobian", "/hessian", "/hvp")[n % 3]
        body = {"X": X.tolist(), "Y": Y.tolist(), "dtype": dtype}
        if path == "/hvp":
            body["V"] = V.tolist()
        r = xla_client.post(path, json=body, headers={"accept": NPZ} if n % 5 == 0 else {})
        assert r.status_code == 200, r.text
        out = load_npz(r.content) if n % 5 == 0 else r.json()
        # The oracle sees what the server computed on: the inputs rounded to the request's dtype.
        Xd, Yd, Vd = (a.astype(dtype) for a in (X, Y if B else Y[None], V))
        for b, y in enumerate(Yd):
            name, want = expected(path, Xd, y, Vd)
            got = np.asarray(out[name])
            scale = oracles.natural_scale(name, Xd, y, Vd)
            assert_close(got[b] if B else got, want, 1e-9 if dtype == "float64" else 1e-5, scale)
        # The shapes XLA may see: rows padded to a power of two; the first calls of a shape whose
        # cost is not known yet run a row at a time (app.engine.costs).
        requested.update({(OPS[path], dtype, rows, A, F) for rows in (1, 1 << (max(B, 1) - 1).bit_length())})
    engine = xla_client.app.state.runtime.engine  # type: ignore[attr-defined]
    engine.wait_for_compiles()
    assert engine.xla_shapes == XLA_MAX_SHAPES  # the cap: many more shapes were asked for twice
    assert {model for model, *_ in engine.compiled_shapes} == {"policy"}
    compiled = {(op, dtype, *x_shape) for _model, op, dtype, x_shape, *_ in engine.compiled_shapes}
    assert compiled <= requested, sorted(compiled - requested)
