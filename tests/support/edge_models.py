"""SavedModels at the edges of differentiation, for the repository tests: one with an op
TensorFlow defines no gradient for on one output's path, one whose path goes through tf.round,
one capturing constants beside its variable, one with a 0-d variable."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf


def _save(root: Path, name: str, fn: tf.types.experimental.GenericFunction) -> None:
    tf.saved_model.save(tf.Module(), str(root / name / "1"), signatures={"serving_default": fn})


def save_logm(root: Path) -> None:
    """m (B, 2, 2) -> log = logm(I + m/10), whose gradient is not defined (MatrixLogarithm), and
    twice = 2m + m², which does not pass through it."""

    @tf.function(input_signature=[tf.TensorSpec([None, 2, 2], tf.float64, name="m")])
    def logm(m: tf.Tensor) -> dict[str, tf.Tensor]:
        square = tf.eye(2, dtype=tf.float64) + 0.1 * m
        return {"log": tf.math.real(tf.linalg.logm(tf.cast(square, tf.complex128))), "twice": 2.0 * m + m * m}

    _save(root, "logm", logm)


def save_rounded(root: Path) -> None:
    """x (B, 3) float64 -> r = 3·round(x), a derivative of zeros, and both = round(x) + x²."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float64, name="x")])
    def rounded(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"r": tf.round(x) * 3.0, "both": tf.round(x) + x * x}

    _save(root, "rounded", rounded)


class _Captured(tf.Module):
    """Constants the signature captures beside its variable, as `self.idx = tf.constant(...)` does."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], dtype=tf.float64, name="w")
        self.idx = tf.constant([2, 0, 1])
        self.scale = tf.constant(1.5, tf.float64)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float64, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.tanh(tf.gather(x, self.idx, axis=1) * self.scale) @ self.w}


def save_captured_constants(root: Path) -> None:
    """x (B, 3) float64 -> y = tanh(x[:, [2, 0, 1]]·1.5)·w (B, 2): captured int and float
    constants beside a variable w (3, 2)."""
    module = _Captured()
    tf.saved_model.save(module, str(root / "captured" / "1"), signatures={"serving_default": module.serve})


class _Scalar(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.s = tf.Variable(1.5, dtype=tf.float64, name="s")

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float64, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.s * x + self.s * self.s}


def save_scalar_variable(root: Path) -> None:
    """x (B, 3) float64 -> y = s·x + s² with one 0-d variable s = 1.5."""
    module = _Scalar()
    tf.saved_model.save(module, str(root / "scalar" / "1"), signatures={"serving_default": module.serve})


def save_slow(root: Path, steps: int = 100, width: int = 256) -> None:
    """x (B, any) float32 -> y (B, 4): each row's mean spread over a width × width matrix, through
    `steps` layers of that width: 10 to 20 ms per row here, about as much for 16 rows as 16
    times one row's. A model whose long requests the deadline must stop."""
    w = tf.constant(tf.random.stateless_normal([width, width], [1, 2]) / width**0.5)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
    def slow(x: tf.Tensor) -> dict[str, tf.Tensor]:
        h = tf.reduce_mean(x, axis=1)[:, None, None] * tf.ones([1, width, width])
        for _ in range(steps):
            h = tf.tanh(h @ w + 0.1)
        return {"y": h[:, 0, :4]}

    _save(root, "slow", slow)
