"""SavedModels at the edges of differentiation, for the repository tests: one with an op
TensorFlow defines no gradient for on one output's path, one whose path goes through tf.round."""

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
