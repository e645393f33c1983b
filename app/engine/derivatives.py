"""The engine: every model's calls (`app.calls.Call`), the built-in model's (`app.engine.builtin`)
and the repository's (`app.engine.repository`) alike, called with NumPy rows. Arrays in, arrays
out: nothing of HTTP.

Concurrent requests with the same (model, call, dtype, shapes) are stacked into one call by the
scheduler. Each traced function has an ``input_signature`` with unknown dimensions, so varying
shapes never retrace; `trace_count` lets callers check that. Functions are traced on first use:
a start-up traces nothing that no request asks for.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port

from app import calls
from app.catalog import Card, variables_fixed
from app.config import Settings
from app.engine import builtin, repository
from app.engine.model_calls import ModelCalls
from app.engine.tensors import Result, to_numpy
from app.engine.versions import Version, Versions
from app.errors import InvalidInput, UnknownModel

log = logging.getLogger("app.engine")
tf.get_logger().setLevel("ERROR")  # the retracing heuristic misfires on our one-trace-per-function setup

_DEFAULTS = Settings.model_fields  # one source for the defaults


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels (decided once, at TensorFlow's import)."""
    return bool(_pywrap_util_port.IsMklEnabled())


class Engine:
    """Every model's derivatives, the built-in one's and the repository's alike: one registry of
    models (`repository`), whose calls are traced on first use, calibrated, timed and run in
    pieces against a deadline (`app.engine.model_calls`)."""

    def __init__(
        self,
        xla: bool = _DEFAULTS["xla"].default,
        xla_after: int = _DEFAULTS["xla_after"].default,
        xla_max_shapes: int = _DEFAULTS["xla_max_shapes"].default,
        model_repository: str | None = None,
        max_output_elements: int = _DEFAULTS["max_output_elements"].default,
        memory_budget_bytes: int | None = None,
        max_versions: int = _DEFAULTS["max_versions"].default,
    ) -> None:
        if onednn_enabled() and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2":
            # See app/tensorflow_env.py: oneDNN's AVX-512 matmul segfaults on our Jacobians.
            raise RuntimeError(
                "TensorFlow was imported with oneDNN's AVX-512 kernels allowed, whose matmul crashes on "
                "these Jacobians; import the app package before TensorFlow (or set ONEDNN_MAX_CPU_ISA=AVX2)"
            )
        # What calibration may ask for: no answer a request's limits would refuse, no more memory
        # than the budget (unset: the machine's, as the service computes it).
        budget = memory_budget_bytes if memory_budget_bytes is not None else Settings().memory_budget_bytes
        # The built-in model first, then the repository's: one registry, served by the same calls.
        found = repository.load_repository(model_repository, (builtin.NAME,), max_versions) if model_repository else {}
        self.refused = [found.pop(builtin.NAME).card] if builtin.NAME in found else []  # listed, not served
        policy = repository.Loaded(
            builtin.CARD,
            graph=builtin.Function(),
            versions=Versions(builtin.NAME, builtin.CARD.version, {}, max_versions),
        )
        self.repository = {builtin.NAME: policy, **found}
        self.xla = xla
        self.model_calls = ModelCalls(
            self.repository, max_output_elements, budget, (xla_after, xla_max_shapes) if xla else None
        )

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
            settings.max_versions,
        )

    @property
    def trace_count(self) -> int:
        """How many times any function has been traced: once per call used, however shapes vary."""
        return sum(self.model_calls.traces.values())

    @property
    def xla_shapes(self) -> int:
        """How many (model, call, dtype, shape) combinations XLA has compiled."""
        return len(self.compiled_shapes)

    @property
    def compiled_shapes(self) -> frozenset[tuple[Any, ...]]:
        """(model, operation, dtype, *input shapes, the call's key) of each XLA-compiled shape, rows padded."""
        xla = self.model_calls.xla
        return frozenset(xla.compiled) if xla is not None else frozenset()

    def wait_for_compiles(self) -> None:
        """Block until queued XLA compilations finish (tests and benchmarks)."""
        if self.model_calls.xla is not None:
            self.model_calls.xla.wait()

    def describe(self) -> dict[str, Any]:
        """What readiness reports of an engine: TensorFlow's version, devices, oneDNN, traces, models."""
        return {
            "tensorflow": tf.__version__,
            "devices": visible_devices(),
            "onednn": onednn_enabled(),
            "trace_count": self.trace_count,
            "xla_shapes": self.xla_shapes,
            # Compiling in the background, on the cores requests use: a benchmark waits for zero.
            "xla_compiling": len(self.model_calls.xla.pending) if self.model_calls.xla is not None else 0,
            "models": [dataclasses.asdict(c) for c in [m.card for m in self.repository.values()] + self.refused],
        }

    def pin(self, model: str, call: calls.Call) -> tuple[calls.Call, Version]:
        """The call on the version it names, or the newest now: the one it runs on, however many
        pushes come before it does (holding the `Version` keeps its values while it is in flight)."""
        version = self._versions(model).get(call.version)
        return dataclasses.replace(call, version=version.number), version

    def push(self, model: str, values: dict[str, np.ndarray], number: int = 0) -> tuple[int, Card]:
        """A new version of the model's variables (`Versions.push`): its number, and the card."""
        versions, loaded = self._versions(model), self.repository[model]
        fixed = variables_fixed(loaded.card)
        if fixed:
            raise InvalidInput(fixed)
        version = versions.push(values, number)
        loaded.card = dataclasses.replace(loaded.card, version=versions.newest.number, versions=versions.numbers)
        log.info("model %s: version %d of its variables (%s)", model, version.number, ", ".join(values))
        return version.number, loaded.card

    def values(self, model: str, number: int = 0) -> tuple[int, dict[str, np.ndarray]]:
        """A version's values of the model's trainable variables (the newest for 0), by name."""
        version = self._versions(model).get(number)
        return version.number, {n: to_numpy(t) for n, t in version.values.items()}

    def _versions(self, model: str) -> Versions:
        loaded = self.repository.get(model)
        if loaded is None or loaded.versions is None:
            raise UnknownModel(f"Unknown model {model!r}; GET /models lists the models served")
        return loaded.versions

    def calibrate(self, model: str, op: str) -> None:
        """A model's operation measured for memory, once (`ModelCalls.calibrate`)."""
        self.model_calls.calibrate(model, op)

    def run(self, call: calls.Call, *rows: np.ndarray, model: str, deadline: float | None = None) -> Result:
        """One call of a model on its row arrays (`app.calls`; `ModelCalls.run`)."""
        return self.model_calls.run(model, call, rows, deadline)

    def call_function(self, model: str, call: calls.Call) -> Callable[..., dict[str, tf.Tensor]]:
        return self.model_calls.function(model, call)


def visible_devices() -> list[str]:
    """Logical devices TensorFlow can place work on, e.g. ['/device:CPU:0', '/device:GPU:0']."""
    return [d.name for d in tf.config.list_logical_devices()]


def enable_gpu_memory_growth() -> None:
    """Allocate GPU memory on demand rather than all of it at start; must run before first use."""
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
