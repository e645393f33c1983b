"""The TensorFlow engine against closed forms and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from app.calls import Call
from app.config import Settings
from app.engine.derivatives import Engine
from tests.support import oracles
from tests.support.helpers import run_policy
from tests.support.oracles import assert_close

TOL = {"float64": 1e-9, "float32": 1e-5}
ROW_BOUND = Settings().max_batch_rows


def rows(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One X shared by the B states of Y: (B, A, F), (B, F)."""
    return np.broadcast_to(X, (Y.shape[0], *X.shape)), Y


REGIMES = ("tame", "peaked", "one-hot", "ties", "zeros in Y")


def _values(rng: np.random.Generator, regime: str, A: int, F: int, B: int) -> tuple[np.ndarray, np.ndarray]:
    """X (A, F) and Y (B, F) in float64, shaped for a softmax regime."""
    if regime == "one-hot":
        # Small integers: X·y is exact even in float32, and its spread (tens to thousands)
        # saturates p to exactly one-hot in both dtypes.
        X = rng.integers(-8, 9, (A, F)) * 16.0
        return X, rng.integers(-4, 5, (B, F)).astype(np.float64)
    X = rng.uniform(-1, 1, (A, F)) * rng.choice([0.1, 1.0])
    Y = rng.uniform(-1, 1, (B, F)) / np.sqrt(F)
    if regime == "peaked":  # logits spread by tens: p far from uniform, most entries tiny
        X *= rng.choice([10.0, 30.0, 100.0])
    elif regime == "ties":  # repeated rows of X: tied logits, at the top when saturated
        X = X[rng.integers(0, max(1, A // 2), A)] * rng.choice([1.0, 100.0])
    elif regime == "zeros in Y":
        Y[:, rng.random(F) < 0.5] = 0.0
    return X, Y


@st.composite
def problems(draw: st.DrawFn, max_a: int = 20, max_f: int = 40, max_b: int = 3, big: bool = True, regimes=REGIMES):
    """(X, Y, regime). With `big`, also the sizes where kernels change: ≥ 32×256, answers over
    2¹⁸ numbers, and the batcher's row bound."""
    size = draw(st.sampled_from(["small", "medium", "large", "row bound"] if big else ["small"]))
    B = draw(st.integers(1, max_b))
    if size == "small":
        A, F = draw(st.integers(1, max_a)), draw(st.integers(1, max_f))
    elif size == "medium":  # where the oneDNN segfault was: 32×256 and up
        A, F = draw(st.integers(32, 64)), draw(st.integers(128, 512))
    elif size == "large":  # answers over 2¹⁸ numbers
        A, F = draw(st.integers(64, 128)), draw(st.integers(64, 256))
    else:
        A, F, B = draw(st.integers(1, 4)), draw(st.integers(1, 8)), ROW_BOUND
    dtype = draw(st.sampled_from(["float32", "float64"]))
    regime = draw(st.sampled_from(regimes))
    X, Y = _values(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), regime, A, F, B)
    return X.astype(dtype), Y.astype(dtype), regime


def states(Y: np.ndarray) -> list[int]:
    """Which states to check: all of a small batch; first, last and one between of a big one."""
    return list(range(len(Y))) if len(Y) <= 4 else [0, len(Y) // 2, len(Y) - 1]


@given(problems())
def test_jacobian_matches_closed_form(engine: Engine, problem) -> None:
    X, Y, _regime = problem
    out = run_policy(engine, "jacobian", ("X", "Y"), *rows(X, Y)).arrays
    tol = TOL[X.dtype.name]
    assert out["J"].dtype == X.dtype and out["J"].shape == (len(Y), *X.shape[:1], *X.shape)
    for b in states(Y):
        y = Y[b]
        for name, want in (
            ("W", oracles.log_softmax(X, y)),
            ("J", oracles.jacobian(X, y)),
            ("J_Y", oracles.jacobian_y(X, y)),
        ):
            assert_close(out[name][b], want, tol, oracles.natural_scale(name, X, y))


# Finite differences are an accurate oracle only where the logits are moderate: their error is
# ~h⁴·|W⁽⁵⁾| (which grows as |y|⁵) plus rounding of ~eps·|W|/h ≈ 1e-13 (hence the 1e-4 floor on
# the scale, at 1e-9 relative). Peaked regimes are checked against the closed form above.
@given(problems(max_a=6, max_f=8, big=False, regimes=("tame", "zeros in Y")))
def test_jacobian_matches_finite_differences(engine: Engine, problem) -> None:
    X, Y, _regime = problem
    X, y = X.astype(np.float64), Y[0].astype(np.float64)
    out = run_policy(engine, "jacobian", ("X", "Y"), X[None], y[None]).arrays
    fd_x = oracles.central_difference(lambda X_: oracles.log_softmax(X_, y), X)
    assert_close(out["J"][0], fd_x, 1e-9, max(oracles.natural_scale("J", X, y), 1e-4))
    fd_y = oracles.central_difference(lambda y_: oracles.log_softmax(X, y_), y)
    assert_close(out["J_Y"][0], fd_y, 1e-9, max(oracles.natural_scale("J_Y", X, y), 1e-4))


@pytest.mark.parametrize("wrt,keys", [(("X",), {"W", "J"}), (("Y",), {"W", "J_Y"})])
def test_each_jacobian_returns_only_what_it_names(
    engine: Engine, rng: np.random.Generator, wrt: tuple[str, ...], keys: set[str]
) -> None:
    X, Y = rng.normal(size=(3, 5)), rng.normal(size=(2, 5))
    out = run_policy(engine, "jacobian", wrt, *rows(X, Y)).arrays
    assert set(out) == keys
    for name in keys - {"W"}:
        want = oracles.jacobian if name == "J" else oracles.jacobian_y
        assert_close(out[name][1], want(X, Y[1]), 1e-9)


def test_batch_equals_per_state(engine: Engine, rng: np.random.Generator) -> None:
    X, Y = rng.normal(size=(7, 11)), rng.normal(size=(5, 11))
    batch = run_policy(engine, "jacobian", ("X", "Y"), *rows(X, Y)).arrays
    for b in range(5):
        single = run_policy(engine, "jacobian", ("X", "Y"), X[None], Y[b : b + 1]).arrays
        for name in ("W", "J", "J_Y"):
            np.testing.assert_allclose(batch[name][b], single[name][0], rtol=1e-12, atol=1e-15)


def test_rows_with_different_matrices_are_independent(engine: Engine, rng: np.random.Generator) -> None:
    Xr, Yr = rng.normal(size=(4, 3, 6)), rng.normal(size=(4, 6))
    out = run_policy(engine, "jacobian", ("X",), Xr, Yr).arrays
    for n in range(4):
        assert_close(out["J"][n], oracles.jacobian(Xr[n], Yr[n]), 1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturated_logits_give_exact_derivatives(engine: Engine, dtype: str) -> None:
    """Logits ±1000: p is exactly one-hot, so J = (δ_ij − p_j)·y_k has entries 0 and ±y_k, and
    the Hessian and every HVP are exactly 0 — all finite, none NaN."""
    X, y = np.array([[1000.0, 0.0], [-1000.0, 0.0], [0.0, 0.0]]), np.array([1.0, 3.0])
    Xr, Yr = X[None].astype(dtype), y[None].astype(dtype)
    out = run_policy(engine, "jacobian", ("X", "Y"), Xr, Yr).arrays
    assert out["W"][0, 1] == pytest.approx(-2000.0, rel=1e-6)
    assert_close(out["W"][0], oracles.log_softmax(X, y), TOL[dtype])
    J = oracles.jacobian(X, y)
    assert set(np.unique(J)) == {-3.0, -1.0, 0.0, 1.0, 3.0}
    np.testing.assert_array_equal(out["J"][0], J)
    assert_close(out["J_Y"][0], oracles.jacobian_y(X, y), TOL[dtype])
    np.testing.assert_array_equal(run_policy(engine, "hessian", ("X",), Xr, Yr).arrays["H"], 0.0)
    np.testing.assert_array_equal(run_policy(engine, "hvp", ("X",), Xr, Yr, np.ones_like(Xr)).arrays["HV"], 0.0)


@given(problems(max_a=6, max_f=8, max_b=2, big=False))
def test_hessian_matches_closed_form(engine: Engine, problem) -> None:
    X, Y, _regime = problem
    H = run_policy(engine, "hessian", ("X",), *rows(X, Y)).arrays["H"]
    for b, y in enumerate(Y):
        assert_close(H[b], oracles.hessian(X, y), TOL[X.dtype.name], oracles.natural_scale("H", X, y))


def test_hessian_matches_finite_differences_of_the_jacobian(engine: Engine, rng: np.random.Generator) -> None:
    X, y = rng.normal(size=(3, 4)), rng.normal(size=4)
    H = run_policy(engine, "hessian", ("X",), X[None], y[None]).arrays["H"][0]

    def jac(X_: np.ndarray) -> np.ndarray:
        return run_policy(engine, "jacobian", ("X",), X_[None], y[None]).arrays["J"][0]

    assert_close(H, oracles.central_difference(jac, X), 1e-9)
    # Symmetry of mixed partials: H[i][j][k][l][m] = H[i][l][m][j][k].
    np.testing.assert_allclose(H, H.transpose(0, 3, 4, 1, 2), rtol=0, atol=1e-15)


def test_hessian_equals_fully_nested_tape_on_every_output(engine: Engine, rng: np.random.Generator) -> None:
    """The served Hessian (one scalar's Hessian broadcast over i: the model's hook) equals the naive nested
    GradientTape Hessian of each W_i: the case the original while_loop Jacobian broke on."""
    X, y = rng.normal(size=(4, 3)), rng.normal(size=3)
    Xt, yt = tf.constant(X), tf.constant(y)
    with tf.GradientTape() as outer:
        outer.watch(Xt)
        with tf.GradientTape() as inner:
            inner.watch(Xt)
            W = tf.nn.log_softmax(tf.linalg.matvec(Xt, yt))
        J = inner.jacobian(W, Xt)
    nested = outer.jacobian(J, Xt).numpy()
    served = run_policy(engine, "hessian", ("X",), X[None], y[None]).arrays["H"][0]
    assert_close(served, nested, 1e-12)


@given(problems())
def test_hvp_is_the_hessian_contracted_with_v(engine: Engine, problem) -> None:
    X, Y, _regime = problem
    rng = np.random.default_rng(X.size)
    V = rng.normal(size=X.shape).astype(X.dtype)
    Xr, Yr = rows(X, Y)
    out = run_policy(engine, "hvp", ("X",), Xr, Yr, np.broadcast_to(V, Xr.shape)).arrays
    for b in states(Y):
        want, scale = oracles.hvp(X, Y[b], V), oracles.natural_scale("HV", X, Y[b], V)
        if X.size <= 48:  # small enough to form H: the closed form of HV is H contracted with V
            contracted = np.einsum("ijklm,lm->ijk", oracles.hessian(X, Y[b]), V.astype(np.float64))
            assert_close(want, contracted, 1e-12, scale)
        assert_close(out["HV"][b], want, TOL[X.dtype.name], scale)


def test_device_is_reported(engine: Engine) -> None:
    result = run_policy(engine, "jacobian", ("X",), np.ones((1, 2, 2), np.float32), np.ones((1, 2), np.float32))
    assert result.device.startswith("/device:") and result.device.split(":")[1] in ("CPU", "GPU")


@pytest.mark.parametrize(
    "op,wrt",
    [("jacobian", ("X",)), ("jacobian", ("Y",)), ("jacobian", ("X", "Y")), ("hessian", ("X",)), ("hvp", ("X",))],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flat_call_agrees_with_the_public_call(
    engine: Engine, rng: np.random.Generator, op: str, wrt: tuple[str, ...], dtype: str
) -> None:
    """The engine calls TensorFlow's private flat entry (`flat_caller`); the public call must agree."""
    X, Y = rng.normal(size=(2, 3, 5)).astype(dtype), rng.normal(size=(2, 5)).astype(dtype)
    extra = (rng.normal(size=(2, 1, 3, 5)).astype(dtype),) if op == "hvp" else ()
    fast = engine.call_function("policy", Call(op, wrt, ("W",), dtype=dtype))
    assert hasattr(fast, "concrete"), "the flat entry is gone: the engine fell back to the public call"
    for name, got in fast(X, Y, *extra).items():
        want = fast.concrete(X, Y, *extra)[name].numpy()
        np.testing.assert_array_equal(got.numpy(), want)


_IN_PLACE_CHILD = """
import json, mmap, sys
import numpy as np
import app  # before TensorFlow: its oneDNN setting
import tensorflow as tf
from app.engine import tensors as E

rng = np.random.default_rng(0)
mm = mmap.mmap(-1, 64 << 20)
out = {}
for offset in (0, 16, 4096 + 8):  # aligned as app.ipc.shm.Layout places inputs, and two ways not
    for dtype in ("float32", "float64"):
        a = rng.normal(size=(1, 256, 1024)).astype(dtype)
        view = np.frombuffer(mm, dtype, a.size, offset).reshape(a.shape)
        view[...] = a
        t = E.as_tensor(view)
        seen = {
            "equal": bool((t.numpy() == a).all()),
            "sum_ok": bool(abs(float(tf.reduce_sum(t)) - float(a.sum(dtype=np.float64))) < 1e-2 * a.size ** 0.5),
        }
        view[0, 0, 0] = 12345.0  # seen through the tensor only if it is the same memory
        seen["in_place"] = float(t[0, 0, 0]) == 12345.0
        out[f"{offset}/{dtype}"] = seen
print(json.dumps(out))
"""


def test_big_aligned_inputs_are_used_in_place_and_unaligned_ones_copied() -> None:
    """`as_tensor` wraps shared-memory inputs through DLPack; TensorFlow aborts the process on a
    misaligned DLPack buffer, so this runs in a child process and checks both sides of the guard."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    child = subprocess.run(
        [sys.executable, "-c", _IN_PLACE_CHILD],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )
    assert child.returncode == 0, f"the child died ({child.returncode}): {child.stderr[-2000:]}"
    got = json.loads(child.stdout.strip().splitlines()[-1])
    for case, seen in got.items():
        assert seen["equal"] and seen["sum_ok"], case
        assert seen["in_place"] == case.startswith("0/"), case
