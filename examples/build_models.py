"""`python -m examples.build_models DIR` (`make models`): the example model repository, in TF
Serving's layout (`DIR/<model>/<version>/saved_model.pb` + `variables/`), written by
`tf.saved_model.save` with a `serving_default` signature each:

- `policy_mlp`: a policy MLP, state (B, 8) → log-probabilities (B, 4) and a value (B, 1), float32.
- `mlp`: the benchmark's 64→256→256→16 tanh MLP, x (B, 64) → y (B, 16), float32.
- `pair`: two inputs and two outputs, a, b (B, 3) → s = a·b + sin(a), d = a − tanh(b), float32.
- `actions`: an integer input, state (B, 4) and action (B,) int32 → the action's log-probability (B,).
- `wide`: float64 throughout, x (B, 5) → y (B, 2).

Weights come from a fixed seed, so the repository is the same on every machine.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

SEED = 20261202


def _weights(rng: np.random.Generator, sizes: list[int], dtype: str, prefix: str = "dense") -> list[tf.Variable]:
    variables = []
    for i, (m, n) in enumerate(itertools.pairwise(sizes)):
        variables.append(tf.Variable((rng.normal(size=(m, n)) / np.sqrt(m)).astype(dtype), name=f"{prefix}/w{i}"))
        variables.append(tf.Variable((rng.normal(size=n) / 10).astype(dtype), name=f"{prefix}/b{i}"))
    return variables


def _dense_tanh(x: tf.Tensor, variables: list[tf.Variable]) -> tf.Tensor:
    """tanh layers, the last one linear."""
    for i in range(0, len(variables), 2):
        x = tf.matmul(x, variables[i]) + variables[i + 1]
        if i + 2 < len(variables):
            x = tf.tanh(x)
    return x


def _save(root: Path, name: str, module: tf.Module, fn: Callable[..., dict[str, tf.Tensor]]) -> Path:
    path = root / name / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": fn})
    return path


def policy_mlp(root: Path, rng: np.random.Generator) -> Path:
    m = tf.Module()
    m.body = _weights(rng, [8, 32, 32], "float32", "body")
    m.logits = _weights(rng, [32, 4], "float32", "logits")
    m.value = _weights(rng, [32, 1], "float32", "value")

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="state")])
    def serve(state: tf.Tensor) -> dict[str, tf.Tensor]:
        h = tf.tanh(_dense_tanh(state, m.body))
        return {"log_probs": tf.nn.log_softmax(_dense_tanh(h, m.logits)), "value": _dense_tanh(h, m.value)}

    return _save(root, "policy_mlp", m, serve)


def mlp(root: Path, rng: np.random.Generator) -> Path:
    m = tf.Module()
    m.layers = _weights(rng, [64, 256, 256, 16], "float32")

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": _dense_tanh(x, m.layers)}

    return _save(root, "mlp", m, serve)


def pair(root: Path, rng: np.random.Generator) -> Path:
    m = tf.Module()
    m.scale = tf.Variable(rng.normal(size=3).astype("float32"), name="scale")

    @tf.function(
        input_signature=[tf.TensorSpec([None, 3], tf.float32, name="a"), tf.TensorSpec([None, 3], tf.float32, name="b")]
    )
    def serve(a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"s": a * b * m.scale + tf.sin(a), "d": a - tf.tanh(b)}

    return _save(root, "pair", m, serve)


def actions(root: Path, rng: np.random.Generator) -> Path:
    m = tf.Module()
    m.layers = _weights(rng, [4, 16, 3], "float32")

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4], tf.float32, name="state"),
            tf.TensorSpec([None], tf.int32, name="action"),
        ]
    )
    def serve(state: tf.Tensor, action: tf.Tensor) -> dict[str, tf.Tensor]:
        log_probs = tf.nn.log_softmax(_dense_tanh(state, m.layers))
        return {"log_prob": tf.gather(log_probs, action, batch_dims=1)}

    return _save(root, "actions", m, serve)


def wide(root: Path, rng: np.random.Generator) -> Path:
    m = tf.Module()
    m.layers = _weights(rng, [5, 7, 2], "float64")

    @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.float64, name="x")])
    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": _dense_tanh(x, m.layers)}

    return _save(root, "wide", m, serve)


EXAMPLES = (policy_mlp, mlp, pair, actions, wide)


def build(root: Path) -> list[Path]:
    rng = np.random.default_rng(SEED)
    return [example(root, rng) for example in EXAMPLES]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for path in build(target):
        print(path)
