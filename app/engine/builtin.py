"""The built-in model, `policy`: W = log_softmax(X·y) for each state y, defined in code and served
by the same machinery as a repository's SavedModels: a card (`app.catalog.Card`) and a function of
named inputs (`Function`), which `app.engine.signatures.Kernel` differentiates like an imported
graph. X is shared by the states (the batch is the states, Y: B×F), a request may send one state
(Y: F), and it computes in float32 or float64, as the request asks.
"""

from __future__ import annotations

from typing import ClassVar

import tensorflow as tf

from app.catalog import Card, Tensor

NAME = "policy"
FORMULA = "log_softmax(X·Y)"

CARD = Card(
    NAME,
    1,
    "ready",
    inputs=(
        Tensor("X", "float32", (None, None), ("A", "F")),
        Tensor("Y", "float32", (None, None), ("B", "F")),
    ),
    outputs=(Tensor("W", "float32", (None, None), ("B", "A")),),
    batch=True,
    shared=("X",),
    optional_batch=True,
    dtypes=("float32", "float64"),
)


class Function:
    """The model on rows: X (N, A, F) — the shared X, one copy per row — and Y (N, F) to W (N, A)."""

    arguments: ClassVar[dict[str, str]] = {"X": "X", "Y": "Y"}  # its inputs (`Kernel` differentiates them per row)

    def __call__(self, inputs: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        z = tf.linalg.matvec(inputs["X"], inputs["Y"])
        return {"W": tf.nn.log_softmax(z, axis=-1)}, {}  # no variables
