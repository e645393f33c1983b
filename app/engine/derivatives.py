"""The engine: each registered model's derivative kernels (`app.engine.kernels`), traced once per
dtype and called with NumPy rows, with the XLA policy. Arrays in, arrays out: nothing of HTTP.

A request with one X and B states is B rows sharing X; concurrent requests with the same
(model, operation, dtype, A, F) are stacked into one call by the scheduler. Each function has an
``input_signature`` with unknown dimensions, so varying shapes never retrace; `trace_count`
lets callers check that. Functions are traced on first use: a start-up traces nothing that no
request asks for (each one costs its first request 0.1-0.5 s, once).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from threading import Lock
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port

from app import calls
from app.config import Settings
from app.engine import builtin, kernels, models, repository
from app.engine.model_calls import ModelCalls
from app.engine.tensors import Result, device_name, flat_caller, to_numpy
from app.ops import BUILTIN, OPERATIONS, XLA_MAX_OUTPUT_BYTES, rows_output_bytes

log = logging.getLogger("app.engine")
tf.get_logger().setLevel("ERROR")  # the retracing heuristic misfires on our one-trace-per-function setup

_DEFAULTS = Settings.model_fields  # one source for the XLA policy's defaults

DTYPES: dict[str, tf.DType] = {"float32": tf.float32, "float64": tf.float64}


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels (decided once, at TensorFlow's import)."""
    return bool(_pywrap_util_port.IsMklEnabled())


class Engine:
    """Traced derivative functions, one per (operation, dtype), built on first use and reused.

    With `xla`, each function also has an XLA-compiled twin (`jit_compile=True`), faster for small
    and middle shapes (bench/measurements.md). XLA compiles once per concrete shape, which takes
    long, so a shape is served by the plain graph until it has been asked for `xla_after` times;
    then a background thread compiles it and later calls use XLA. Row counts are padded to a power
    of two on the XLA path so batching does not multiply shapes, at most `xla_max_shapes` shapes
    are compiled, which bounds XLA's cache, and big outputs are never compiled (app.ops).
    """

    def __init__(
        self,
        xla: bool = _DEFAULTS["xla"].default,
        xla_after: int = _DEFAULTS["xla_after"].default,
        xla_max_shapes: int = _DEFAULTS["xla_max_shapes"].default,
        model_repository: str | None = None,
        max_output_elements: int = _DEFAULTS["max_output_elements"].default,
        memory_budget_bytes: int | None = None,
    ) -> None:
        if onednn_enabled() and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2":
            # See app/tensorflow_env.py: oneDNN's AVX-512 matmul segfaults on our Jacobians.
            raise RuntimeError(
                "TensorFlow was imported with oneDNN's AVX-512 kernels allowed, whose matmul crashes on "
                "these Jacobians; import the app package before TensorFlow (or set ONEDNN_MAX_CPU_ISA=AVX2)"
            )
        self.xla = xla
        # What calibration may ask for: no answer a request's limits would refuse, no more memory
        # than the budget (unset: the machine's, as the service computes it).
        self._memory_budget = memory_budget_bytes if memory_budget_bytes is not None else Settings().memory_budget_bytes
        self._xla_after = xla_after
        self._xla_max_shapes = xla_max_shapes
        self._traces: Counter[str] = Counter()
        self._functions: dict[tuple[str, str, str, bool], Callable[..., dict[str, tf.Tensor]]] = {}
        self._tracing = Lock()  # the XLA compiler's thread traces too
        self._seen: Counter[tuple[Any, ...]] = Counter()
        self._compiled: set[tuple[Any, ...]] = set()
        self._compiling: set[tuple[Any, ...]] = set()
        self._pending: set[Future[None]] = set()  # compiles queued or running
        self._compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xla-compile") if xla else None
        # The built-in model first, then the repository's: one registry, served by the same calls.
        found = repository.load_repository(model_repository, (builtin.NAME,)) if model_repository else {}
        self.refused = [found.pop(builtin.NAME).card] if builtin.NAME in found else []  # listed, not served
        self.repository = {builtin.NAME: repository.Loaded(builtin.CARD, graph=builtin.Function()), **found}
        self.model_calls = ModelCalls(self.repository, self._traces, max_output_elements, self._memory_budget)

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        """The engine the service runs: XLA, the repository, and what calibration may ask for."""
        return cls(
            settings.xla,
            settings.xla_after,
            settings.xla_max_shapes,
            settings.model_repository,
            settings.max_output_elements,
            settings.memory_budget_bytes,
        )

    def function(self, model: str, op: str, dtype_name: str, jit_compile: bool = False) -> Callable[..., Any]:
        """The traced function of a built-in (model, operation, dtype), plain or XLA, traced on first use."""
        key = (model, op, dtype_name, jit_compile)
        fn = self._functions.get(key)
        if fn is None:
            with self._tracing:
                fn = self._functions.get(key) or self._trace(model, op, dtype_name, jit_compile)
                self._functions[key] = fn
        return fn

    def _trace(self, model: str, op: str, dtype_name: str, jit_compile: bool) -> Any:
        if op not in OPERATIONS or dtype_name not in DTYPES or model not in models.MODELS:
            raise KeyError((model, op, dtype_name))
        body = kernels.kernel(model, op)
        key = f"{model}/{op}/{dtype_name}/{'xla' if jit_compile else 'graph'}"

        def counted(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            self._traces[key] += 1  # Python side effect: runs only while tracing
            return body(*args)

        fn = tf.function(counted, input_signature=kernels.signature(op, DTYPES[dtype_name]), jit_compile=jit_compile)
        return flat_caller(fn.get_concrete_function())

    @property
    def trace_count(self) -> int:
        """How many times any function has been traced: once per function used, however shapes vary."""
        return sum(self._traces.values())

    @property
    def xla_shapes(self) -> int:
        """How many (operation, dtype, shape) combinations XLA has compiled."""
        return len(self._compiled)

    def describe(self) -> dict[str, Any]:
        """What readiness reports of an engine: TensorFlow's version, devices, oneDNN, traces, XLA."""
        return {
            "tensorflow": tf.__version__,
            "devices": visible_devices(),
            "onednn": onednn_enabled(),
            "trace_count": self.trace_count,
            "xla_shapes": self.xla_shapes,
            # Compiling in the background, on the cores requests use: a benchmark waits for zero.
            "xla_compiling": len(self._pending),
            "models": [dataclasses.asdict(c) for c in [m.card for m in self.repository.values()] + self.refused],
        }

    @property
    def compiled_shapes(self) -> frozenset[tuple[Any, ...]]:
        """(model, operation, dtype, *input shapes) of each XLA-compiled shape, rows padded."""
        return frozenset(self._compiled)

    def calibrate(self, model: str, op: str) -> None:
        """A repository model's operation measured for memory, once (`ModelCalls.calibrate`)."""
        self.model_calls.calibrate(model, op)

    def run_call(
        self, model: str, call: calls.Call, rows: tuple[np.ndarray, ...], deadline: float | None = None
    ) -> Result:
        """One call of a repository model on its row arrays (`ModelCalls.run`)."""
        return self.model_calls.run(model, call, rows, deadline)

    def call_function(self, model: str, call: calls.Call) -> Callable[..., dict[str, tf.Tensor]]:
        return self.model_calls.function(model, call)

    def run_rows(self, op: str, *rows: np.ndarray, model: str = BUILTIN, deadline: float | None = None) -> Result:
        """Run operation `op` of `model` on rows Xr: (N, A, F), Yr: (N, F) and the op's other
        inputs, all of one float dtype; returns the op's engine outputs (app.ops). For a
        repository model, `op` is an encoded `app.calls.Call` and the rows are its arrays."""
        if calls.is_call(op):
            return self.run_call(model, calls.Call.decode(op), rows, deadline)
        fn_key = (model, op, rows[0].dtype.name)
        args = rows
        if self.xla:
            n = len(rows[0])
            padded = _pad_rows(args, _next_power_of_two(n))
            shape_key = (*fn_key, *(a.shape for a in padded))
            if shape_key in self._compiled:
                out = self.function(*fn_key, jit_compile=True)(*padded)
                return Result({k: to_numpy(t)[:n] for k, t in out.items()}, device_name(out["W"]))
            self._maybe_compile(fn_key, shape_key, padded)
        out = self.function(*fn_key)(*args)
        return Result({k: to_numpy(t) for k, t in out.items()}, device_name(out["W"]))

    def _maybe_compile(
        self, fn_key: tuple[str, str, str], shape_key: tuple[Any, ...], padded: tuple[np.ndarray, ...]
    ) -> None:
        if len(self._compiling) >= self._xla_max_shapes:
            return
        if rows_output_bytes(fn_key[1], padded, fn_key[0]) > XLA_MAX_OUTPUT_BYTES:
            return  # big outputs stay on the graph path (see app.ops)
        if len(self._seen) > 100 * self._xla_max_shapes:
            self._seen.clear()  # many one-off shapes: forget them rather than grow without bound
        self._seen[shape_key] += 1
        if self._seen[shape_key] < self._xla_after or shape_key in self._compiling:
            return
        self._compiling.add(shape_key)
        zeros = tuple(np.zeros_like(a) for a in padded)  # the shape is what compiles, not the values
        assert self._compiler is not None

        def compile_shape() -> None:
            self.function(*fn_key, jit_compile=True)(*zeros)
            self._compiled.add(shape_key)

        future = self._compiler.submit(compile_shape)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def wait_for_compiles(self) -> None:
        """Block until queued XLA compilations finish (tests and benchmarks)."""
        if self._compiler is not None:
            self._compiler.submit(lambda: None).result()


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _pad_rows(arrays: tuple[np.ndarray, ...], rows: int) -> tuple[np.ndarray, ...]:
    """Repeat row 0 up to `rows` rows; the padding's results are computed and dropped."""
    n = len(arrays[0])
    if rows == n:
        return arrays
    return tuple(np.concatenate([a, np.broadcast_to(a[:1], (rows - n, *a.shape[1:]))]) for a in arrays)


def visible_devices() -> list[str]:
    """Logical devices TensorFlow can place work on, e.g. ['/device:CPU:0', '/device:GPU:0']."""
    return [d.name for d in tf.config.list_logical_devices()]


def enable_gpu_memory_growth() -> None:
    """Allocate GPU memory on demand rather than all of it at start; must run before first use."""
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
