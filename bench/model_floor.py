"""The floor for users' own models: the service a user would write for one SavedModel in an
afternoon. A minimal FastAPI app that loads the model (`JACOBIAN_FLOOR_MODEL`, a SavedModel
folder), answers with `tape.batch_jacobian` / `tape.gradient` inside a `tf.function` traced once,
orjson out. `bench.models` measures the service against it."""

from __future__ import annotations

import io
import os

import numpy as np
import orjson
import tensorflow as tf
from fastapi import FastAPI, Request
from starlette.responses import Response

import app as _env  # noqa: F401  (TensorFlow's environment: oneDNN off, as the service runs it)

_loaded = tf.saved_model.load(os.environ["JACOBIAN_FLOOR_MODEL"])  # kept: the signature needs it
_fn = _loaded.signatures["serving_default"]
_name = next(iter(_fn.structured_input_signature[1]))
_spec = _fn.structured_input_signature[1][_name]
_out = next(iter(_fn.structured_outputs))


@tf.function(input_signature=[tf.TensorSpec(_spec.shape, _spec.dtype)])
def _jacobian(x: tf.Tensor) -> tf.Tensor:
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = _fn(**{_name: x})[_out]
    return tape.batch_jacobian(y, x)


@tf.function(
    input_signature=[
        tf.TensorSpec(_spec.shape, _spec.dtype),
        tf.TensorSpec(_fn.structured_outputs[_out].shape, _spec.dtype),
    ]
)
def _policy_gradient(x: tf.Tensor, u: tf.Tensor) -> list[tf.Tensor]:
    with tf.GradientTape() as tape:
        y = _fn(**{_name: x})[_out]
    return tape.gradient(y, _fn.trainable_variables, output_gradients=u)


app = FastAPI()


@app.get("/health/ready")
async def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/jacobian")
async def jacobian(request: Request) -> Response:
    x = np.load(io.BytesIO(await request.body()))["x"]
    return Response(
        orjson.dumps(_jacobian(x).numpy(), option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


@app.post("/policy_gradient")
async def policy_gradient(request: Request) -> Response:
    arrays = np.load(io.BytesIO(await request.body()))
    grads = _policy_gradient(arrays["x"], arrays["u"])
    body = {v.name: g.numpy() for v, g in zip(_fn.trainable_variables, grads, strict=True)}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")
