"""A repository model's calls (`app.calls.Call`): each traced on first use from its kernel
(`app.engine.signatures`), calibrated for memory on its operation's first use
(`app.engine.calibration`), timed, and run in pieces against a deadline (`app.engine.costs`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from app import calls
from app.engine import calibration, costs, signatures
from app.engine.repository import Loaded
from app.engine.tensors import Result, device_name, flat_caller, reason, to_numpy
from app.errors import DeadlineExceeded, ModelRefused

log = logging.getLogger("app.engine")


class ModelCalls:
    """The repository models' traced calls, their timings and which operations are calibrated."""

    def __init__(
        self, repository: dict[str, Loaded], traces: Counter[str], max_output_elements: int, memory_budget: int
    ) -> None:
        self.repository = repository
        self.traces = traces  # the engine's, shared: tracing is counted in one place
        self.max_output_elements, self.memory_budget = max_output_elements, memory_budget
        self.functions: dict[tuple[Any, ...], Callable[..., dict[str, tf.Tensor]]] = {}
        self.calibrated: set[tuple[str, str]] = set()
        self.costs = costs.Costs()

    def calibrate(self, model: str, op: str) -> None:
        """Measure the peak of a repository model's operation once, before its first call runs
        (`app.engine.calibration`): later requests' memory claims use it."""
        key = (model, op)
        if key in self.calibrated:
            return
        self.calibrated.add(key)  # first: calibration's own calls come back through run
        loaded = self.repository[model]
        factor = calibration.calibrate(self.run, model, loaded.card, op, self.max_output_elements, self.memory_budget)
        if factor is not None:
            loaded.card = dataclasses.replace(loaded.card, peak_factors={**loaded.card.peak_factors, op: factor})
            log.info("model %s: TensorFlow's peak for %s is %g times its inputs and answer", model, op, factor)

    def run(self, model: str, call: calls.Call, rows: tuple[np.ndarray, ...], deadline: float | None = None) -> Result:
        """One call of a repository model on its row arrays (`app.calls`). What its graph refuses
        (an index out of range, a failed assertion) is the request's fault: `ModelRefused`.

        With a `deadline` (`time.monotonic()`), a call that cannot finish by then is refused before
        it starts, and one of independent rows runs in pieces and stops once it has passed
        (`app.engine.costs`): `DeadlineExceeded`."""
        self.calibrate(model, call.op)
        key = (model, call.key, *((r.dtype.str, r.shape[1:]) for r in rows))
        n = len(rows[0])
        pieces = deadline is not None and call.stack and not call.sum_batch
        piece = self.costs.piece(key, n) if pieces else n
        done: list[dict[str, np.ndarray]] = []
        start, device = 0, ""
        while start < n:
            if deadline is not None:
                self._refuse_late(model, key, n, start, piece, deadline)
            part, device = self._timed_call(model, call, key, tuple(r[start : start + piece] for r in rows))
            done.append(part)
            start += piece
            piece = self.costs.piece(key, n - start) if pieces else n
        arrays = done[0] if len(done) == 1 else {k: np.concatenate([d[k] for d in done]) for k in done[0]}
        return Result(arrays, device)

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

    def _timed_call(
        self, model: str, call: calls.Call, key: Any, rows: tuple[np.ndarray, ...]
    ) -> tuple[dict[str, np.ndarray], str]:
        traces, start = sum(self.traces.values()), time.perf_counter()
        try:
            out = self.function(model, call)(*rows)
        except tf.errors.InvalidArgumentError as err:
            raise ModelRefused(f"Model {model!r} refused these inputs: {reason(err.message)}") from None
        if sum(self.traces.values()) == traces:  # a call that traced says nothing of the next one's time
            self.costs.observe(key, len(rows[0]), time.perf_counter() - start)
        first = next(iter(out.values()))
        return {k: to_numpy(t) for k, t in out.items()}, device_name(first)

    def function(self, model: str, call: calls.Call) -> Callable[..., dict[str, tf.Tensor]]:
        """The traced function of a call, traced on first use: one per (model, operation, wrt,
        of), however the shapes vary."""
        key = (model, *call.key)
        fn = self.functions.get(key)
        if fn is None:
            loaded = self.repository[model]
            assert loaded.graph is not None, f"model {model} is not loaded"
            kernel = signatures.Kernel(loaded.card, loaded.graph, call)
            trace_key = f"{model}/{'/'.join(map(str, call.key))}"

            def counted(*rows: tf.Tensor) -> dict[str, tf.Tensor]:
                self.traces[trace_key] += 1
                return kernel(*rows)

            traced = tf.function(counted, input_signature=kernel.signature())
            fn = self.functions[key] = flat_caller(traced.get_concrete_function())
        return fn
