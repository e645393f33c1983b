"""The built-in model, `policy`: W = log_softmax(X·y) for each state y, defined in code and served
by the same machinery as a repository's SavedModels: its card (`app.catalog.BUILTIN_CARD`) and a
function of named inputs (`Function`), which `app.engine.kernels.Kernel` differentiates as it
does an imported graph. Its one hook: every output has the same Hessian (`Function.same_hessian`).
"""

from __future__ import annotations

from typing import ClassVar

import tensorflow as tf

from app.catalog import BUILTIN, BUILTIN_CARD

NAME = BUILTIN
CARD = BUILTIN_CARD


class Function:
    """The model on rows: X (N, A, F) — the shared X, one copy per row — and Y (N, F) to W (N, A)."""

    arguments: ClassVar[dict[str, str]] = {"X": "X", "Y": "Y"}  # its inputs (`Kernel` differentiates them per row)
    xla = True  # small and middle shapes run faster compiled (`app.engine.xla`)
    values: ClassVar[dict[str, str]] = {}  # no variables: X, its parameters, come with every request

    def __call__(
        self, inputs: dict[str, tf.Tensor], values: dict[str, tf.Tensor] | None = None
    ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        z = tf.linalg.matvec(inputs["X"], inputs["Y"])
        return {"W": tf.nn.log_softmax(z, axis=-1)}, {}  # no variables

    def same_hessian(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """A scalar per row whose Hessian in X, or in Y, is every W_i's: W_i = z_i − logsumexp(z)
        with z = X·y linear in each, so the kernel computes one Hessian per row, not A of them."""
        return -tf.reduce_logsumexp(tf.linalg.matvec(inputs["X"], inputs["Y"]), axis=-1)
