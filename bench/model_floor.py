"""The floor for users' own models: the service a user would write for their SavedModels in an
afternoon, with TensorFlow's defaults. A minimal FastAPI app that loads every model of a
repository folder (`JACOBIAN_FLOOR_REPOSITORY`, TF Serving's layout), and answers
`POST /{model}/{operation}` (npz in, npz out) with a `tf.function` per model and operation, traced
once, around `GradientTape` (`batch_jacobian`, `gradient`):

- `predict`: the outputs.
- `jacobian`: each output's `batch_jacobian` in each floating input.
- `vjp`: the gradient in each floating input with cotangents `u/<output>`.
- `pg`: the policy gradient, the same in the trainable variables (summed over the batch).
- `pg_at`: the same at the caller's parameters: members `theta/<i>` (the signature's trainable
  variables in order) assigned to the variables first, as a learner's server would.
- `jvp`: each output's J·t with tangents `t/<input>`.

`bench.models` and `bench.zoo` measure the service against it; `POST /{model}/{operation}/timed`
times the same `tf.function` in this process, without HTTP.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from fastapi import FastAPI, Request
from starlette.responses import Response

Arrays = dict[str, tf.Tensor]


class Floor:
    """One SavedModel's operations, each a `tf.function` with the signature's input specs."""

    def __init__(self, path: Path) -> None:
        self.keep = tf.saved_model.load(str(path))  # kept: the signature needs it
        self.f = self.keep.signatures["serving_default"]
        _args, kwargs = self.f.structured_input_signature
        self.specs = dict(sorted(kwargs.items()))
        self.floating = [n for n, s in self.specs.items() if s.dtype.is_floating]
        outs = self.f.structured_outputs
        self.out_specs = {n: tf.TensorSpec(t.shape, t.dtype) for n, t in outs.items() if t.dtype.is_floating}
        inputs = {n: tf.TensorSpec(s.shape, s.dtype) for n, s in self.specs.items()}
        cotangents = {f"u/{n}": s for n, s in self.out_specs.items()}
        tangents = {f"t/{n}": tf.TensorSpec(self.specs[n].shape, self.specs[n].dtype) for n in self.floating}
        theta = {f"theta/{i}": tf.TensorSpec(v.shape, v.dtype) for i, v in enumerate(self.f.trainable_variables)}
        self.ops: dict[str, Callable[[Arrays], Arrays]] = {
            "predict": tf.function(self._predict, input_signature=[inputs]),
            "jacobian": tf.function(self._jacobian, input_signature=[inputs]),
            "vjp": tf.function(self._vjp, input_signature=[inputs | cotangents]),
            "pg": tf.function(self._pg, input_signature=[inputs | cotangents]),
            "pg_at": tf.function(self._pg_at, input_signature=[inputs | cotangents | theta]),
            "jvp": tf.function(self._jvp, input_signature=[inputs | tangents]),
        }

    def _call(self, xs: Arrays) -> Arrays:
        out = self.f(**{n: xs[n] for n in self.specs})
        return {n: out[n] for n in self.out_specs}

    def _predict(self, xs: Arrays) -> Arrays:
        return self._call(xs)

    def _jacobian(self, xs: Arrays) -> Arrays:
        with tf.GradientTape(persistent=True) as tape:
            for n in self.floating:
                tape.watch(xs[n])
            # batch_jacobian wants a row axis and one more: (B,) outputs get one, on the tape
            ys = {o: y if y.shape.rank > 1 else y[:, None] for o, y in self._call(xs).items()}
        return {f"{o}/{n}": tape.batch_jacobian(y, xs[n]) for o, y in ys.items() for n in self.floating}

    def _vjp(self, xs: Arrays) -> Arrays:
        with tf.GradientTape() as tape:
            for n in self.floating:
                tape.watch(xs[n])
            ys = self._call(xs)
        targets = list(ys.values())
        grads = tape.gradient(targets, [xs[n] for n in self.floating], output_gradients=[xs[f"u/{o}"] for o in ys])
        return dict(zip(self.floating, grads, strict=True))

    def _pg(self, xs: Arrays) -> Arrays:
        with tf.GradientTape() as tape:
            ys = self._call(xs)
        variables = self.f.trainable_variables
        grads = tape.gradient(list(ys.values()), variables, output_gradients=[xs[f"u/{o}"] for o in ys])
        return {f"v{i}": tf.convert_to_tensor(g) for i, g in enumerate(grads)}

    def _pg_at(self, xs: Arrays) -> Arrays:
        for i, v in enumerate(self.f.trainable_variables):
            v.assign(xs[f"theta/{i}"])
        return self._pg(xs)

    def _jvp(self, xs: Arrays) -> Arrays:
        """J·t by the double-backward trick (`ForwardAccumulator` fails on a loaded signature
        inside a `tf.function` here): uᵀJ is linear in u, so its gradient in u along t is J·t."""
        primals = [xs[n] for n in self.floating]
        with tf.GradientTape() as forward:
            forward.watch(primals)
            ys = self._call(xs)
        names = list(ys)
        with tf.GradientTape() as backward:
            us = [tf.zeros_like(ys[o]) for o in names]
            backward.watch(us)
            g = forward.gradient([ys[o] for o in names], primals, output_gradients=us)
        found = backward.gradient(g, us, output_gradients=[xs[f"t/{n}"] for n in self.floating])
        return dict(zip(names, found, strict=True))

    def run(self, op: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.ops[op](arrays).items()}


def load(root: Path) -> dict[str, Floor]:
    """Each model's highest version."""
    found = {}
    for model in sorted(p for p in root.iterdir() if p.is_dir()):
        versions = sorted((int(v.name), v) for v in model.iterdir() if v.name.isdigit())
        if versions:
            found[model.name] = Floor(versions[-1][1])
    return found


def _app() -> FastAPI:
    floors = load(Path(os.environ["JACOBIAN_FLOOR_REPOSITORY"]))
    served = FastAPI()

    @served.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @served.post("/{model}/{op}/timed")
    async def timed(model: str, op: str, request: Request, n: int = 5) -> dict[str, float]:
        """The same `tf.function` timed in this process, arrays already parsed: the median of n."""
        arrays: dict[str, Any] = dict(np.load(io.BytesIO(await request.body())))
        floors[model].run(op, arrays)
        seconds = []
        for _ in range(n):
            start = time.perf_counter()
            floors[model].run(op, arrays)
            seconds.append(time.perf_counter() - start)
        return {"seconds": statistics.median(seconds)}

    @served.post("/{model}/{op}")
    async def operation(model: str, op: str, request: Request) -> Response:
        arrays: dict[str, Any] = dict(np.load(io.BytesIO(await request.body())))
        buf = io.BytesIO()
        np.savez(buf, **floors[model].run(op, arrays))
        return Response(buf.getvalue(), media_type="application/x-npz")

    return served


app = _app() if "JACOBIAN_FLOOR_REPOSITORY" in os.environ else FastAPI()
