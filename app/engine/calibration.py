"""A repository model's memory calibration, per operation on its first use: TensorFlow's peak for
the operation's example call, as a multiple of the call's inputs and answer (`Card.peak_factors`,
from which later requests' memory claims are made). It asks for nothing a request's limits would
refuse: an operation whose answer for one example is over the output limit is neither traced nor
run, and the rows are halved from ROWS until inputs and answer fit the memory budget HEADROOM
times over. The peak is measured on 2 rows, and again on up to ROWS when that takes at most SECONDS
(an image model's Jacobian on 32 rows took longer than its tracing). Start-up calibrates nothing:
tracing every operation of an image model took minutes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from app import calls
from app.catalog import Card
from app.engine import repository
from app.errors import InvalidInput, ModelRefused

log = logging.getLogger("app.engine")

ROWS = 32  # rows of a batch model the peaks are measured on, at most
HEADROOM = 8  # TensorFlow's peak, a multiple of inputs and answer, assumed before it is measured
SECONDS = 1.0  # the longest a measurement on ROWS rows may take; beyond, the 2 rows' peak is the one

RunCall = Callable[[str, calls.Call, tuple[np.ndarray, ...]], Any]  # Engine.run_call -> Result


def calibrate(
    run_call: RunCall,
    name: str,
    card: Card,
    op: str,
    max_output_elements: int,
    budget: int,
    call: calls.Call | None = None,
) -> float | None:
    """`call` (the first request's, whose function is then traced once), or the operation's
    example call (every differentiable input, every output with a defined gradient; one input for
    second derivatives), traced and run on example inputs, then its peak measured on more rows:
    peak / (inputs + answer). None when it cannot be measured."""
    try:
        call = call or calls.example_call(card, op)
    except InvalidInput:  # nothing to differentiate
        return None
    n = rows_for(card, call, max_output_elements, budget)
    if n == 0:  # no request can ask for it: neither traced nor run
        log.info("model %s: %s not calibrated: one example's answer is over the limits", name, op)
        return None
    try:
        few = example_rows(card, call, min(2, n))
        run_call(name, call, few)  # traces it
        start = time.perf_counter()
        found, result = peak(run_call, name, call, few)
        seconds = time.perf_counter() - start
        rows = few
        if n > len(few[0]) and seconds * n / len(few[0]) <= SECONDS:  # more rows tell it better, if quick
            rows = example_rows(card, call, n)
            found, result = peak(run_call, name, call, rows)
    except ModelRefused as err:  # its example inputs are not valid for it
        log.info("calibrating %s %s on example inputs: %s", name, op, err.message)
        return None
    moved: int = sum(r.nbytes for r in rows) + sum(a.nbytes for a in result.arrays.values())
    return round(found / max(moved, 1), 3)


def rows_for(card: Card, call: calls.Call, max_output_elements: int, budget: int) -> int:
    """The most rows, up to ROWS (one for a model without a batch axis), whose answer the output
    limit admits and whose inputs and answer fit `budget` HEADROOM times over; 0 when one row's
    answer is already over the limit."""
    one = example_rows(card, call, 1)
    inputs = {t.name: r.shape[1:] for t, r in zip(card.inputs, one[: len(card.inputs)], strict=True)}
    outputs = {t.name: tuple(1 if d is None else d for d in calls.row_shape(card, t)) for t in card.outputs}
    elements = sum(int(np.prod(s)) for s in calls.output_shapes(card, call, 1, 1, inputs, outputs).values())
    row_bytes = sum(r.nbytes for r in one) + 8 * elements
    n = ROWS if card.batch else 1
    while n > 0 and (n * elements > max_output_elements or HEADROOM * n * row_bytes > budget):
        n //= 2
    return n


def peak(run_call: RunCall, model: str, call: calls.Call, rows: tuple[np.ndarray, ...]) -> tuple[int, Any]:
    """The allocator's peak above what it held before, for one call (its BFC statistics), and the
    call's result."""
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    tf.config.experimental.reset_memory_stats(device)
    before = tf.config.experimental.get_memory_info(device)["current"]
    result = run_call(model, call, rows)
    return tf.config.experimental.get_memory_info(device)["peak"] - before, result


def example_rows(card: Card, call: calls.Call, rows: int) -> tuple[np.ndarray, ...]:
    """Example inputs (`repository.example_inputs`) as a call's rows, with one product each."""
    inputs = repository.example_inputs(card, batch=rows if card.batch else 1, dtype=call.dtype)
    given = calls.as_rows(card, {n: np.asarray(x) for n, x in inputs.items()})
    n = rows if card.batch else 1
    products = [np.zeros((n, 1, *shape), dtype) for shape, dtype in _product_rows(card, call)]
    return tuple(given + products)


def _product_rows(card: Card, call: calls.Call) -> list[tuple[tuple[int, ...], str]]:
    """Per-row shapes (unknown sizes as 1, named ones as 4: `repository.example_inputs`) and dtypes
    of a call's cotangents or tangents."""
    tensors = {t.name: t for t in card.inputs + card.outputs}
    found = []
    for n in call.product_names():
        t = tensors[n]
        shape = tuple((4 if t.symbols else 1) if d is None else d for d in calls.row_shape(card, t))
        found.append((shape, call.dtype if call.dtype and t.floating else t.dtype))
    return found
