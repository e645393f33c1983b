"""Arrays into and out of TensorFlow for the engine: NumPy rows in (`as_tensor`, in place from
shared memory where it is safe), a traced function called below its structured signature
(`flat_caller`), NumPy views out (`Result`), and what TensorFlow says was wrong (`reason`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf


def device_name(tensor: tf.Tensor) -> str:
    """'/job:localhost/replica:0/task:0/device:CPU:0' -> '/device:CPU:0'."""
    full: str = tensor.device
    return "/device:" + full.rsplit("/device:", 1)[-1] if "/device:" in full else full


def to_numpy(tensor: tf.Tensor) -> np.ndarray:
    """A zero-copy, read-only view of a host tensor (`.numpy()` would copy it)."""
    try:
        return np.from_dlpack(tensor)
    except (RuntimeError, BufferError, TypeError, ValueError):  # device memory: copy to host
        host: np.ndarray = tensor.numpy()
        return host


@dataclass(frozen=True)
class Result:
    """NumPy outputs of one engine call, and the TensorFlow device that computed them."""

    arrays: dict[str, np.ndarray]
    device: str
    version: int = 0  # of the model's variables

    def slice(self, start: int, stop: int) -> Result:
        """Rows start:stop of every array (views, no copy)."""
        return Result({k: a[start:stop] for k, a in self.arrays.items()}, self.device, self.version)


DLPACK_MIN_BYTES = 1 << 20
TF_ALIGN = 64  # Eigen's largest alignment (AVX-512); TensorFlow aborts on a less aligned buffer


def as_tensor(a: np.ndarray | tf.Tensor) -> tf.Tensor:
    """`a` as a tensor (a tensor as it is: a version's variables). A big input in a worker's
    shared-memory segment (64-byte aligned by `app.ipc.shm.Layout`) is wrapped in place through
    DLPack: `tf.constant` copies, 0.8 ms per 4 MB here. Anything else is copied: TensorFlow does
    not check a DLPack buffer's alignment until a kernel aborts the process on it, so only arrays
    that pass every condition are wrapped."""
    if isinstance(a, tf.Tensor):
        return a
    if (
        a.nbytes >= DLPACK_MIN_BYTES
        and a.flags.c_contiguous
        and a.flags.writeable  # numpy exports no read-only array through DLPack
        and a.ctypes.data % TF_ALIGN == 0
    ):
        return tf.experimental.dlpack.from_dlpack(a.__dlpack__())
    return tf.constant(a)


_NOT_REASONS = ("Graph execution error", "Detected at node", "<stack traces", "[[")


def reason(message: str) -> str:
    """What TensorFlow says was wrong ('indices[0] = 7 is not in [0, 3)'): the line before its
    node names, without the stack it may quote before it."""
    lines = [line.strip() for line in message.splitlines()]
    found = [line for line in lines if line and not line.startswith(_NOT_REASONS)]
    return (found[-1] if found else "an invalid argument").split(" [Op:")[0][:300]


def flat_caller(concrete: Any) -> Callable[..., dict[str, tf.Tensor]]:
    """Call a concrete function with positional arrays, below its structured signature.

    The engine calls its functions eagerly, outside any tape, with arrays of the traced dtype and
    rank: the public call's dispatch, argument binding, tape checks and output packing are then
    most of a small call (37 of 100 µs for the 2×4 Jacobian here). So the function is run by
    TensorFlow's context by name, and its flat outputs named where TensorFlow's own packing puts
    them (worked out once). These entries are private to TensorFlow: without them, the public call
    (`tests/app/test_engine.py` checks that both agree).
    """
    inference: Any = getattr(concrete, "_inference_function", None)
    context: Any = getattr(inference, "_bound_context", None)
    try:  # where each output sits among the flat ones, as TensorFlow packs them
        where = inference.function_type.pack_output(list(range(len(inference.function_type.flat_outputs))))
    except (AttributeError, TypeError, ValueError):
        where = None
    if not isinstance(where, dict) or not hasattr(context, "call_function"):
        return concrete  # type: ignore[no-any-return]
    captured = list(concrete.captured_inputs)
    names, count, function = list(where), len(where), inference.name
    order = [where[n] for n in names]

    def call(*arrays: np.ndarray) -> dict[str, tf.Tensor]:
        flat = context.call_function(function, [as_tensor(a) for a in arrays] + captured, count)
        return {n: flat[i] for n, i in zip(names, order, strict=True)}

    call.concrete = concrete  # type: ignore[attr-defined]
    return call
