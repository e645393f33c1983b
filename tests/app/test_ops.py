"""app/ops.py: the operation contract is what the engine returns and what the service serves."""

from __future__ import annotations

import numpy as np
import pytest

from app import ops
from app.engine.derivatives import Engine
from tests.support import oracles
from tests.support.oracles import assert_close


@pytest.mark.parametrize("op", list(ops.OPERATIONS))
def test_the_engine_returns_exactly_the_contracts_outputs(engine: Engine, rng: np.random.Generator, op: str) -> None:
    n, A, F, K = 2, 3, 5, 2
    inputs = [rng.normal(size=shape) for shape in ops.OPERATIONS[op].input_shapes(n, A, F, K).values()]
    arrays = engine.run_rows(op, *inputs).arrays
    assert {k: a.shape for k, a in arrays.items()} == ops.output_shapes(op, n, A, F, K)
    served = ops.assemble(arrays, A)
    assert {k: a.shape for k, a in served.items()} == ops.OPERATIONS[op].shapes(n, A, F, K, served=True)


def test_the_hessian_is_assembled_as_a_view_equal_for_every_output(engine: Engine, rng: np.random.Generator) -> None:
    X, y = rng.normal(size=(3, 4)), rng.normal(size=4)
    arrays = engine.run_rows(ops.HESSIAN, X[None], y[None]).arrays
    H = ops.assemble(arrays, 3)["H"]
    assert not H.flags.owndata and H.shape == (1, 3, 3, 4, 3, 4)
    assert_close(H[0], oracles.hessian(X, y), 1e-9)
