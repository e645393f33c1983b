"""The models the engine differentiates, by name: each a TensorFlow function of rows,
W (N, A) = f(X (N, A, F), Y (N, F)). `register` is the one call that adds a model: it records its
TensorFlow-free description in `app.ops.MODELS` too, so every layer serves it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from app import ops

RowFunction = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclass(frozen=True)
class EngineModel:
    spec: ops.Model
    forward: RowFunction  # (X (N, A, F), Y (N, F)) -> W (N, A)
    # With spec.shared_hessian: a scalar per row whose Hessian in X is every W_i's.
    shared: RowFunction | None = None


MODELS: dict[str, EngineModel] = {}


def register(spec: ops.Model, forward: RowFunction, shared: RowFunction | None = None) -> EngineModel:
    if spec.shared_hessian != (shared is not None):
        raise ValueError(f"model {spec.name!r}: a shared Hessian needs its scalar function, and only then")
    model = MODELS[spec.name] = EngineModel(spec, forward, shared)
    ops.register(spec)
    return model


def _log_softmax_rows(Xr: tf.Tensor, Yr: tf.Tensor) -> tf.Tensor:
    """W[n] = log_softmax(Xr[n] @ Yr[n]), stably."""
    return tf.nn.log_softmax(tf.linalg.matvec(Xr, Yr), axis=-1)


def _neg_logsumexp_rows(Xr: tf.Tensor, Yr: tf.Tensor) -> tf.Tensor:
    """W_i = z_i − logsumexp(z) with z = X·y linear in X, so d²z_i/dX² = 0 and the Hessian of
    every W_i is that of −logsumexp(z): one scalar Hessian per row instead of A of them."""
    return -tf.reduce_logsumexp(tf.linalg.matvec(Xr, Yr), axis=-1)


register(ops.MODELS[ops.BUILTIN], _log_softmax_rows, _neg_logsumexp_rows)
