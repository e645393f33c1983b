"""KServe 0.21 serving the built-in model's Jacobian the way its docs recommend: a `kserve.Model`
whose `predict` runs `tape.jacobian` in a `tf.function`, over KServe's own REST server (the V1
protocol: POST /v1/models/policy:predict with {"X": A×F, "Y": F}). The benchmark's reference for
one client's latency (`bench.run`); it runs in a virtualenv of its own (`make bench` builds it:
KServe pins its own FastAPI, protobuf and grpc).

    python -m bench.kserve_model --http_port 8080
"""

from __future__ import annotations

from typing import Any

import kserve
import numpy as np
import tensorflow as tf


@tf.function(reduce_retracing=True)
def jacobian(X: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    with tf.GradientTape() as tape:
        tape.watch(X)
        W = tf.nn.log_softmax(tf.linalg.matvec(X, y))
    return W, tape.jacobian(W, X)


class Policy(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.ready = True
        return True

    async def predict(self, payload: dict[str, Any], headers: Any = None, response_headers: Any = None) -> Any:
        X = np.asarray(payload["X"], np.float32)
        y = np.asarray(payload["Y"], np.float32)
        W, J = jacobian(X, y)
        return {"W": W.numpy().tolist(), "J": J.numpy().tolist()}


if __name__ == "__main__":
    kserve.ModelServer().start([Policy("policy")])
