"""`python -m examples.zoo DIR`: models nobody here wrote, saved the ways users save them, random
weights from fixed seeds, at sizes this machine takes (the tests' and `make bench`'s zoo):

- `mobilenet_export`, `mobilenet_saved`: `keras.applications.MobileNetV2` (32×32×3, 10 classes),
  by Keras 3's `model.export` and by `tf.saved_model.save(model, ...)`.
- `resnet_export`, `resnet_saved`: `keras.applications.ResNet50` (32×32×3, 10 classes), both ways.
- `bn_dropout`: a functional model with BatchNormalization and Dropout, x (B, 8) -> (B, 3).
- `embedding`: an Embedding of an int input beside a float one, ids (B, 4) int32, dense (B, 3).
- `linalg`: a `tf.Module` capturing float and int constants, through Cholesky, a triangular solve,
  log-det, `rfft`, `gather` and `where`, x (B, 4) float64.
- `density`: a TensorFlow Probability `MultivariateNormalTriL.log_prob` with trainable loc and
  scale, x (B, 3) (only when tensorflow_probability imports).
- `no_gradient`: one output through `tf.linalg.logm` (no gradient), one not, m (B, 2, 2).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

SEED = 20261206
IMAGE = (32, 32, 3)


def _keras() -> object:
    import keras

    keras.utils.set_random_seed(SEED)
    return keras


def _both_ways(root: Path, name: str, model: object) -> list[Path]:
    exported, saved = root / f"{name}_export" / "1", root / f"{name}_saved" / "1"
    model.export(str(exported), verbose=False)  # type: ignore[attr-defined]
    tf.saved_model.save(model, str(saved))
    return [exported, saved]


def mobilenet(root: Path) -> list[Path]:
    keras = _keras()
    model = keras.applications.MobileNetV2(input_shape=IMAGE, weights=None, classes=10)  # type: ignore[attr-defined]
    return _both_ways(root, "mobilenet", model)


def resnet(root: Path) -> list[Path]:
    keras = _keras()
    model = keras.applications.ResNet50(input_shape=IMAGE, weights=None, classes=10)  # type: ignore[attr-defined]
    return _both_ways(root, "resnet", model)


def bn_dropout(root: Path) -> Path:
    keras = _keras()
    layers = keras.layers  # type: ignore[attr-defined]
    x = keras.Input((8,), name="x")  # type: ignore[attr-defined]
    h = layers.Dense(16)(x)
    h = layers.BatchNormalization()(h)
    h = layers.Activation("tanh")(h)
    h = layers.Dropout(0.5)(h)
    model = keras.Model(x, layers.Dense(3)(h))  # type: ignore[attr-defined]
    # Moving statistics other than 0 and 1, as a trained model has.
    bn = model.layers[2]
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 16).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 16).astype("float32"))
    path = root / "bn_dropout" / "1"
    model.export(str(path), verbose=False)
    return path


def embedding(root: Path) -> Path:
    keras = _keras()
    layers = keras.layers  # type: ignore[attr-defined]
    ids = keras.Input((4,), dtype="int32", name="ids")  # type: ignore[attr-defined]
    dense = keras.Input((3,), name="dense")  # type: ignore[attr-defined]
    e = layers.Flatten()(layers.Embedding(20, 5)(ids))
    h = layers.Dense(8, activation="tanh")(layers.Concatenate()([e, dense]))
    model = keras.Model([ids, dense], layers.Dense(2)(h))  # type: ignore[attr-defined]
    path = root / "embedding" / "1"
    model.export(str(path), verbose=False)
    return path


class _Linalg(tf.Module):
    def __init__(self) -> None:
        rng = np.random.default_rng(SEED)
        self.w = tf.Variable(rng.normal(size=(4, 4)) / 2, name="w")
        self.shift = tf.constant(rng.normal(size=4))  # captured float constant
        self.idx = tf.constant([3, 0, 2], tf.int32)  # captured int constant

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float64, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        h = tf.tanh(x @ self.w + self.shift)  # (B, 4)
        spd = h[:, :, None] * h[:, None, :] + 2.0 * tf.eye(4, dtype=tf.float64)  # SPD per row
        chol = tf.linalg.cholesky(spd)
        solved = tf.linalg.triangular_solve(chol, h[:, :, None])[:, :, 0]
        spectrum = tf.abs(tf.signal.rfft(tf.cast(h, tf.float32)))  # (B, 3)
        picked = tf.gather(h, self.idx, axis=1)  # (B, 3)
        gated = tf.where(picked > 0, picked, 0.1 * picked)
        return {
            "logdet": tf.linalg.logdet(spd),
            "solved": solved,
            "mixed": gated * tf.cast(spectrum, tf.float64),
        }


def linalg(root: Path) -> Path:
    module = _Linalg()
    path = root / "linalg" / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def density(root: Path) -> Path | None:
    try:
        import tensorflow_probability as tfp
    except ImportError:
        return None
    rng = np.random.default_rng(SEED)
    module = tf.Module()
    module.loc = tf.Variable(rng.normal(size=3).astype("float32"), name="loc")
    module.scale = tf.Variable((np.eye(3) + 0.1 * np.tril(rng.normal(size=(3, 3)), -1)).astype("float32"), name="scale")

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        dist = tfp.distributions.MultivariateNormalTriL(
            loc=module.loc, scale_tril=tf.linalg.band_part(module.scale, -1, 0)
        )
        return {"log_prob": dist.log_prob(x)}

    path = root / "density" / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


def no_gradient(root: Path) -> Path:
    @tf.function(input_signature=[tf.TensorSpec([None, 2, 2], tf.float64, name="m")])
    def serve(m: tf.Tensor) -> dict[str, tf.Tensor]:
        square = tf.eye(2, dtype=tf.float64) + 0.1 * m
        return {"log": tf.math.real(tf.linalg.logm(tf.cast(square, tf.complex128))), "cube": m * m * m}

    path = root / "no_gradient" / "1"
    tf.saved_model.save(tf.Module(), str(path), signatures={"serving_default": serve})
    return path


SMALL: list[Callable[[Path], object]] = [bn_dropout, embedding, linalg, density, no_gradient]
IMAGES: list[Callable[[Path], object]] = [mobilenet, resnet]


def build(root: Path, images: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for make in SMALL + (IMAGES if images else []):
        make(root)


if __name__ == "__main__":
    import app  # noqa: F401  (oneDNN off before TensorFlow starts: app/tensorflow_env.py)

    build(Path(sys.argv[1]))
