"""XLA for the models whose function asks for it (`xla = True`: the built-in's, where it measured
faster for small and middle shapes, bench/measurements.md). XLA compiles once per concrete shape,
which takes long, so a shape is served by the plain graph until it has been asked for `after`
times; then a background thread compiles it, and later calls use XLA. Rows are padded to a power
of two so batching does not multiply shapes, at most `max_shapes` shapes are compiled, which
bounds XLA's cache, and answers over MAX_OUTPUT_BYTES are never compiled (XLA gains little there,
and holds its buffers beside TensorFlow's).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from app.calls import Call

if TYPE_CHECKING:
    import tensorflow as tf

MAX_OUTPUT_BYTES = 16 << 20
Traced = Callable[..., "dict[str, tf.Tensor]"]


class Xla:
    def __init__(self, after: int, max_shapes: int, function: Callable[[str, Call, bool], Traced]) -> None:
        self.after, self.max_shapes = after, max_shapes
        self._function = function  # (model, call, jit_compile) -> the traced call
        self._seen: Counter[tuple[Any, ...]] = Counter()
        self.compiled: set[tuple[Any, ...]] = set()
        self._compiling: set[tuple[Any, ...]] = set()
        self.pending: set[Future[None]] = set()  # compiles queued or running
        self._compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xla-compile")

    def run(self, model: str, call: Call, rows: tuple[np.ndarray, ...]) -> dict[str, tf.Tensor] | None:
        """The call's outputs from its compiled function, on its rows padded (the padding's rows
        are the caller's to cut), once its shape is compiled; None until then (counted)."""
        padded = _pad_rows(rows, _next_power_of_two(len(rows[0])))
        key = (model, call.op, rows[0].dtype.name, *(a.shape for a in padded), call.key)
        if key in self.compiled:
            return self._function(model, call, True)(*padded)
        self._consider(model, call, key, padded)
        return None

    def _consider(self, model: str, call: Call, key: tuple[Any, ...], padded: tuple[np.ndarray, ...]) -> None:
        if len(self._compiling) >= self.max_shapes or call.output_bytes(len(padded[0])) > MAX_OUTPUT_BYTES:
            return
        if len(self._seen) > 100 * self.max_shapes:
            self._seen.clear()  # many one-off shapes: forget them rather than grow without bound
        self._seen[key] += 1
        if self._seen[key] < self.after or key in self._compiling:
            return
        self._compiling.add(key)
        zeros = tuple(np.zeros_like(a) for a in padded)  # the shape is what compiles, not the values

        def compile_shape() -> None:
            self._function(model, call, True)(*zeros)
            self.compiled.add(key)

        future = self._compiler.submit(compile_shape)
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)

    def wait(self) -> None:
        """Block until queued compilations finish (tests and benchmarks)."""
        self._compiler.submit(lambda: None).result()


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _pad_rows(arrays: tuple[np.ndarray, ...], rows: int) -> tuple[np.ndarray, ...]:
    """Repeat row 0 up to `rows` rows; the padding's results are computed and dropped."""
    n = len(arrays[0])
    if rows == n:
        return arrays
    return tuple(np.concatenate([a, np.broadcast_to(a[:1], (rows - n, *a.shape[1:]))]) for a in arrays)
