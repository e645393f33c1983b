"""The derivative kernels, by TensorFlow autodiff, over any model (`app.engine.models`).

Arrays in, arrays out: every derivative is computed by `tf.GradientTape` /
`tf.autodiff.ForwardAccumulator`; closed forms live in the tests only. Every kernel works on
*rows*: a stack of N independent problems, ``Xr: (N, A, F)`` and ``Yr: (N, F)``, and the other
inputs its contract names (`app.ops.OPERATIONS`).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from app import ops
from app.engine.models import MODELS, EngineModel

Kernel = Callable[..., dict[str, tf.Tensor]]


def _jacobian(m: EngineModel, Xr: tf.Tensor, Yr: tf.Tensor) -> dict[str, tf.Tensor]:
    """-> W: (N, A), J: (N, A, A, F) with J[n, i, j, k] = dW[n, i] / dXr[n, j, k]."""
    with tf.GradientTape() as tape:
        tape.watch(Xr)
        W = m.forward(Xr, Yr)
    return {"W": W, "J": tape.batch_jacobian(W, Xr)}


def _jacobian_y(m: EngineModel, Xr: tf.Tensor, Yr: tf.Tensor) -> dict[str, tf.Tensor]:
    """-> W: (N, A), J_Y: (N, A, F) with J_Y[n, i, k] = dW[n, i] / dYr[n, k]."""
    with tf.GradientTape() as tape:
        tape.watch(Yr)
        W = m.forward(Xr, Yr)
    return {"W": W, "J_Y": tape.batch_jacobian(W, Yr)}


def _jacobian_xy(m: EngineModel, Xr: tf.Tensor, Yr: tf.Tensor) -> dict[str, tf.Tensor]:
    """-> W: (N, A), J: (N, A, A, F), J_Y: (N, A, F): both Jacobians from one forward pass."""
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(Xr)
        tape.watch(Yr)
        W = m.forward(Xr, Yr)
    return {"W": W, "J": tape.batch_jacobian(W, Xr), "J_Y": tape.batch_jacobian(W, Yr)}


def _hessian(m: EngineModel, Xr: tf.Tensor, Yr: tf.Tensor) -> dict[str, tf.Tensor]:
    """-> W: (N, A) and, by nested tapes, H: (N, A, A, F, A, F) — or, for a model whose outputs
    share one Hessian, H_lse: (N, A, F, A, F), that Hessian of its scalar (A·F reverse passes,
    vectorized by pfor, instead of A of them); the service broadcasts it over i."""
    with tf.GradientTape() as outer:
        outer.watch(Xr)
        with tf.GradientTape() as inner:
            inner.watch(Xr)
            inner_target = m.shared(Xr, Yr) if m.shared is not None else m.forward(Xr, Yr)
        # Rows are independent, so the gradient of a shared scalar's sum is each row's own gradient.
        first = inner.gradient(inner_target, Xr) if m.shared is not None else inner.batch_jacobian(inner_target, Xr)
    second = outer.batch_jacobian(first, Xr)
    if m.shared is not None:
        return {"W": m.forward(Xr, Yr), "H_lse": second}
    return {"W": inner_target, "H": second}


def _hvp(m: EngineModel, Xr: tf.Tensor, Yr: tf.Tensor, Vr: tf.Tensor) -> dict[str, tf.Tensor]:
    """Vr: (N, A, F) -> W: (N, A), HV: (N, A, A, F), HV[n, i] = sum_lm d²W[n, i]/dX dX_lm · V[n, l, m].

    Forward-over-reverse: the directional derivative (along V) of the Jacobian, so H is never
    formed and the cost is about that of one Jacobian.
    """
    with tf.autodiff.ForwardAccumulator(primals=Xr, tangents=Vr) as acc:
        with tf.GradientTape() as tape:
            tape.watch(Xr)
            W = m.forward(Xr, Yr)
        J = tape.batch_jacobian(W, Xr)
    return {"W": W, "HV": acc.jvp(J)}


def _vjp(m: EngineModel, Xr: tf.Tensor, Yr: tf.Tensor, Ur: tf.Tensor) -> dict[str, tf.Tensor]:
    """Ur: (N, K, A) -> W: (N, A), UJ: (N, K, A, F), UJ[n, k] = Σ_i Ur[n, k, i] · dW[n, i]/dXr[n].

    Reverse mode, J never formed: one forward pass on the tape, then the K reverse passes
    vectorized by pfor (`vectorized_map`), which keeps the loop-invariant forward out of the loop.
    """
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(Xr)
        W = m.forward(Xr, Yr)
    per_k = tf.vectorized_map(lambda u: tape.gradient(W, Xr, output_gradients=u), tf.transpose(Ur, [1, 0, 2]))
    return {"W": W, "UJ": tf.transpose(per_k, [1, 0, 2, 3])}


def _jvp(m: EngineModel, Xr: tf.Tensor, Yr: tf.Tensor, Vr: tf.Tensor) -> dict[str, tf.Tensor]:
    """Vr: (N, K, A, F) -> W: (N, A), JV: (N, K, A), JV[n, k, i] = Σ_jk dW[n, i]/dXr[n, j, k] · Vr[n, k, j, k].

    Forward mode (`ForwardAccumulator`), J never formed; the K tangents vectorized by pfor, the
    primal computation being loop-invariant is done once.
    """

    def along(v: tf.Tensor) -> tf.Tensor:
        with tf.autodiff.ForwardAccumulator(primals=Xr, tangents=v) as acc:
            W = m.forward(Xr, Yr)
        return acc.jvp(W)

    per_k = tf.vectorized_map(along, tf.transpose(Vr, [1, 0, 2, 3]))
    return {"W": m.forward(Xr, Yr), "JV": tf.transpose(per_k, [1, 0, 2])}


_KERNELS: dict[str, Callable[..., dict[str, tf.Tensor]]] = {
    ops.JACOBIAN: _jacobian,
    ops.JACOBIAN_Y: _jacobian_y,
    ops.JACOBIAN_XY: _jacobian_xy,
    ops.HESSIAN: _hessian,
    ops.HVP: _hvp,
    ops.VJP: _vjp,
    ops.JVP: _jvp,
}


def kernel(model: str, op: str) -> Kernel:
    """Operation `op` of a registered model, as a function of its row arrays."""
    m, body = MODELS[model], _KERNELS[op]

    def rows(*arrays: tf.Tensor) -> dict[str, tf.Tensor]:
        return body(m, *arrays)

    return rows


def signature(op: str, dtype: tf.DType) -> list[tf.TensorSpec]:
    # Every dimension unknown, ranks from the contract (app.ops): no request shape retraces.
    return [
        tf.TensorSpec([None] * len(shape), dtype, name=name + "r") for name, shape in ops.OPERATIONS[op].inputs.items()
    ]
