"""Independent answers to check the service against: closed forms and finite differences,
all in float64 NumPy. Test-only: the service itself computes every derivative by autodiff."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def softmax(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = X.astype(np.float64) @ y.astype(np.float64)
    e = np.exp(z - z.max())
    out: np.ndarray = e / e.sum()
    return out


def log_softmax(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = X.astype(np.float64) @ y.astype(np.float64)
    m = z.max()
    return z - m - np.log(np.exp(z - m).sum())


def jacobian(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(A, A, F): dW_i/dX_jk = (δ_ij − p_j)·y_k."""
    p, A = softmax(X, y), X.shape[0]
    return (np.eye(A)[:, :, None] - p[None, :, None]) * y.astype(np.float64)[None, None, :]


def jacobian_rows(X: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    """`jacobian`, one output i at a time: (A, F) each."""
    p, y64 = softmax(X, y), y.astype(np.float64)
    for i in range(X.shape[0]):
        row = -p[:, None] * y64[None, :]
        row[i] += y64
        yield row


def jacobian_y(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(A, F): dW_i/dY_k = X_ik − Σ_j p_j X_jk."""
    p = softmax(X, y)
    X64 = X.astype(np.float64)
    return X64 - p @ X64


def hessian(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(A, A, F, A, F): d²W_i/dX_jk dX_lm = −p_j(δ_jl − p_l)·y_k·y_m, the same for every i."""
    p, (A, F) = softmax(X, y), X.shape
    y64 = y.astype(np.float64)
    dp = p[:, None] * (np.eye(A) - p[None, :])
    H = -dp[:, None, :, None] * np.outer(y64, y64)[None, :, None, :]
    return np.broadcast_to(H[None], (A, A, F, A, F))


def central_difference(f: Callable[[np.ndarray], np.ndarray], X: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """d f / d X by the 5-point stencil (error O(h⁴)): shape f(X).shape + X.shape."""
    X = X.astype(np.float64)
    out = np.empty(np.shape(f(X)) + X.shape)
    for idx in np.ndindex(*X.shape):

        def at(step: float, idx: tuple[int, ...] = idx) -> np.ndarray:
            Xs = X.copy()
            Xs[idx] += step
            return np.asarray(f(Xs), dtype=np.float64)

        d = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
        out[(..., *idx)] = d
    return out


def natural_scale(name: str, X: np.ndarray, y: np.ndarray, V: np.ndarray | None = None) -> float:
    """The size of the terms that output `name` is computed from, times the logits' condition.

    Rounding in precision eps errs by about eps times these terms, not times the answer: where
    p saturates, 1 − p_j cancels (the Hessian's p_j(δ_jl − p_l) is then tiny while its absolute
    error stays ~eps·y²), and the logits z = X·y carry an error of ~eps·Σ|X_jk·y_k| into p. An
    error bound relative to the answer alone would demand accuracy no float format has there.
    """
    X64, y64 = np.abs(X.astype(np.float64)), np.abs(y.astype(np.float64))
    logits = 1.0 + float((X64 @ y64).max())
    y_max = float(y64.max(initial=0.0))
    if name == "W":
        return logits
    if name == "J":
        return logits * y_max
    if name == "J_Y":
        return logits * float(X64.max())
    if name in ("H", "H_lse"):
        return logits * y_max**2
    assert name == "HV" and V is not None
    return logits * y_max * float((np.abs(V.astype(np.float64)) @ y64).max())


def assert_close(actual: np.ndarray, expected: np.ndarray, rel: float, scale: float = 0.0) -> None:
    """Max abs error within `rel` of max(|expected|, `scale`) (elementwise-relative fails at 0);
    pass `natural_scale(...)` where the inputs may saturate."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.abs(expected).max(initial=0.0)), scale, 1e-300)
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= rel * scale, f"max abs error {err:.3e} > {rel:g} × scale {scale:.3e}"


def hvp(X: np.ndarray, y: np.ndarray, V: np.ndarray) -> np.ndarray:
    """(A, A, F): Σ_lm H[i][j][k][l][m]·V_lm = −p_j·y_k·((V·y)_j − p·(V·y)), the same for every i,
    without forming H (so it also serves sizes whose Hessian would not fit)."""
    p, A = softmax(X, y), X.shape[0]
    y64 = y.astype(np.float64)
    Vy = V.astype(np.float64) @ y64
    row = -(p * (Vy - p @ Vy))[:, None] * y64[None, :]
    return np.broadcast_to(row[None], (A, *row.shape))


def vjp(X: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(A, F): u·J = (u_j − p_j Σ_i u_i)·y_k."""
    p = softmax(X, y)
    u64, y64 = u.astype(np.float64), y.astype(np.float64)
    return (u64[:, None] - p[:, None] * u64.sum()) * y64[None, :]


def jvp(X: np.ndarray, y: np.ndarray, V: np.ndarray) -> np.ndarray:
    """(A,): J·V = (V·y)_i − p·(V·y)."""
    Vy = V.astype(np.float64) @ y.astype(np.float64)
    return Vy - softmax(X, y) @ Vy
