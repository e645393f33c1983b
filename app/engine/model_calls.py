"""A model's calls (`app.calls.Call`), the built-in's and the repository's: each traced on first
use from its kernel (`app.engine.signatures`), calibrated for memory on its operation's first use
(`app.engine.calibration`), timed, run in pieces against a deadline (`app.engine.costs`), and
compiled with XLA for a model that asks for it (`app.engine.xla`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from threading import Lock
from typing import Any

import numpy as np
import tensorflow as tf

from app import calls
from app.engine import calibration, costs, kernels
from app.engine.repository import Loaded
from app.engine.tensors import Result, device_name, flat_caller, reason, to_numpy
from app.engine.xla import Xla
from app.errors import DeadlineExceeded, ModelRefused

log = logging.getLogger("app.engine")


class ModelCalls:
    """The models' traced calls, their timings, which operations are calibrated, and XLA for the
    models that ask for it (`app.engine.xla`)."""

    def __init__(
        self,
        repository: dict[str, Loaded],
        max_output_elements: int,
        memory_budget: int,
        xla: tuple[int, int] | None = None,  # (after, max_shapes), or off
    ) -> None:
        self.repository = repository
        self.traces: Counter[str] = Counter()
        self.max_output_elements, self.memory_budget = max_output_elements, memory_budget
        self.functions: dict[tuple[Any, ...], Callable[..., dict[str, tf.Tensor]]] = {}
        self.calibrated: set[tuple[str, str]] = set()
        self.costs = costs.Costs()
        self.xla = Xla(*xla, self.function) if xla is not None else None
        self._tracing = Lock()  # the XLA compiler's thread traces too

    def calibrate(self, model: str, op: str, call: calls.Call | None = None) -> None:
        """Measure the peak of a model's operation once, before its first call runs
        (`app.engine.calibration`), on that call (traced once for both) or the operation's
        example call: later requests' memory claims use it."""
        key = (model, op)
        if key in self.calibrated:
            return
        self.calibrated.add(key)  # first: calibration's own calls come back through run
        loaded = self.repository[model]
        measure = functools.partial(self.run, xla=False)  # its example shapes are no request's
        limit, budget = self.max_output_elements, self.memory_budget
        example = dataclasses.replace(call, variables=()) if call is not None else None  # at the stored values
        factor = calibration.calibrate(measure, model, loaded.card, op, limit, budget, example)
        if factor is not None:
            loaded.card = dataclasses.replace(loaded.card, peak_factors={**loaded.card.peak_factors, op: factor})
            log.info("model %s: TensorFlow's peak for %s is %g times its inputs and answer", model, op, factor)

    def run(
        self,
        model: str,
        call: calls.Call,
        rows: tuple[np.ndarray, ...],
        deadline: float | None = None,
        xla: bool = True,
    ) -> Result:
        """One call of a model on its row arrays (`app.calls`). What its graph refuses (an index
        out of range, a failed assertion) is the request's fault: `ModelRefused`. With `xla`, a
        model that asks for it may be served compiled (not calibration's example shapes).

        With a `deadline` (`time.monotonic()`), a call that cannot finish by then is refused before
        it starts, and one of independent rows runs in pieces and stops once it has passed
        (`app.engine.costs`): `DeadlineExceeded`."""
        self.calibrate(model, call.op, call)
        rows, values, version = self._values(model, call, rows)
        key = (model, call.key, *((r.dtype.str, r.shape[1:]) for r in rows))
        n = len(rows[0])
        pieces = deadline is not None and call.stack and not call.sum_batch
        family, row_bytes = (model, call.key), sum(r[:1].nbytes for r in rows) + call.row_bytes
        piece = self.costs.piece(key, n, family, row_bytes) if pieces else n
        done: list[dict[str, np.ndarray]] = []
        start, device = 0, ""
        while start < n:
            if deadline is not None:
                self._refuse_late(model, key, n, start, piece, deadline)
            part, device = self._timed_call(
                model, call, key, tuple(r[start : start + piece] for r in rows), values, xla
            )
            done.append(part)
            start += piece
            piece = self.costs.piece(key, n - start, family, row_bytes) if pieces else n
        arrays = done[0] if len(done) == 1 else {k: np.concatenate([d[k] for d in done]) for k in done[0]}
        return Result(arrays, device, version)

    def _refuse_late(self, model: str, key: Any, n: int, start: int, piece: int, deadline: float) -> None:
        """Refused before it starts, or stopped between pieces, once the deadline has passed or the
        rows left cannot be done before it (as timed on earlier calls)."""
        left = deadline - time.monotonic()
        needed = self.costs.at_least(key, n - start, piece)
        if left > 0 and (needed is None or needed <= left):
            return
        if needed is None or left <= 0:
            why = "the deadline passed"
        else:
            rows = "these rows" if start == 0 else "the other rows"
            why = f"{rows} need at least {needed:.1f} s, more than the {left:.1f} s left"
        done = "was refused before it started" if start == 0 else f"was stopped after {start} of its {n} rows"
        raise DeadlineExceeded(f"Model {model!r} {done}: {why} (JACOBIAN_DEADLINE_S); send fewer rows")

    def _values(
        self, model: str, call: calls.Call, rows: tuple[np.ndarray, ...]
    ) -> tuple[tuple[np.ndarray, ...], tuple[Any, ...], int]:
        """The row arrays, the values of the variables the traced function reads (the call's own,
        its last arrays by `call.variables`, the others its version's), and that version."""
        n_given = len(call.variables)
        given = dict(zip(call.variables, rows[len(rows) - n_given :], strict=True))
        loaded = self.repository[model]
        assert loaded.versions is not None and loaded.graph is not None, f"model {model} is not loaded"
        version = loaded.versions.get(call.version)
        valued = kernels.valued(loaded.card, loaded.graph)
        values = tuple(given.get(v.name, version.values.get(v.name)) for v in valued)
        return rows[: len(rows) - n_given], values, version.number

    def _timed_call(
        self,
        model: str,
        call: calls.Call,
        key: Any,
        rows: tuple[np.ndarray, ...],
        values: tuple[Any, ...] = (),
        xla: bool = True,
    ) -> tuple[dict[str, np.ndarray], str]:
        traces, start = sum(self.traces.values()), time.perf_counter()
        n = len(rows[0])
        try:
            out = compiled = self._xla(model, call, rows) if xla and not values else None  # rows padded: cut below
            out = out if out is not None else self.function(model, call)(*rows, *values)
        except tf.errors.InvalidArgumentError as err:
            raise ModelRefused(f"Model {model!r} refused these inputs: {reason(err.message)}") from None
        if sum(self.traces.values()) == traces:  # a call that traced says nothing of the next one's time
            row_bytes = sum(r[:1].nbytes for r in rows) + call.row_bytes
            self.costs.observe(key, n, time.perf_counter() - start, (model, call.key), row_bytes)
        first = next(iter(out.values()))
        return {k: to_numpy(t)[:n] if compiled else to_numpy(t) for k, t in out.items()}, device_name(first)

    def _xla(self, model: str, call: calls.Call, rows: tuple[np.ndarray, ...]) -> dict[str, tf.Tensor] | None:
        """Its XLA-compiled call (rows padded), for a model that asks for XLA, once its shape is hot."""
        wants = self.xla is not None and call.stack and getattr(self.repository[model].graph, "xla", False)
        return self.xla.run(model, call, rows) if wants and self.xla is not None else None

    def function(self, model: str, call: calls.Call, jit_compile: bool = False) -> Callable[..., dict[str, tf.Tensor]]:
        """The traced function of a call, traced on first use: one per (model, operation, wrt,
        of, dtype), plain or XLA, however the shapes vary."""
        key = (model, *call.key, jit_compile)
        fn = self.functions.get(key)
        if fn is None:
            with self._tracing:
                fn = self.functions.get(key) or self._trace(model, call, jit_compile)
                self.functions[key] = fn
        return fn

    def _trace(self, model: str, call: calls.Call, jit_compile: bool) -> Callable[..., dict[str, tf.Tensor]]:
        loaded = self.repository[model]
        assert loaded.graph is not None, f"model {model} is not loaded"
        kernel = kernels.Kernel(loaded.card, loaded.graph, call)
        trace_key = f"{model}/{'/'.join(map(str, call.key))}/{'xla' if jit_compile else 'graph'}"

        def counted(*rows: tf.Tensor) -> dict[str, tf.Tensor]:
            self.traces[trace_key] += 1  # Python side effect: runs only while tracing
            return kernel(*rows)

        traced = tf.function(counted, input_signature=kernel.signature(), jit_compile=jit_compile)
        return flat_caller(traced.get_concrete_function())
