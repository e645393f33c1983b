"""The memory budget: what a request may cost before it runs, and the ledger of what requests in
flight have claimed. No TensorFlow, no web imports.

A request claims its estimated peak (`estimate`) before it queues and gives it back when its
answer has been sent, or when it is dropped. One ledger per engine holds every worker's claims,
so the budget covers the engine and all HTTP workers together.

`estimate` is built from measurements (the peak factors in `app.ops.OPERATIONS`), not guesses:
`python -m bench.memory` prints, for each
operation at three sizes, the estimate against the measured peak of all the service's processes
(bench/results.md). TensorFlow's part is a multiple of the engine's output, measured as process
memory (its BFC allocator's own statistics read lower: 1.0× for a one-row Jacobian, 3.0× for a
Hessian-vector product; the process holds more, up to 1.16× and 4.3× here). A shape served
by XLA (outputs up to `ops.XLA_MAX_OUTPUT_BYTES`) holds XLA's buffers beside that pool: 2.3× for
a Jacobian and 7.7× for a Hessian-vector product, measured the same way.
Big requests are never stacked into one call (`app.scheduling.policy.take_batch`), so these one-row
factors hold for every call that matters for memory.
"""

from __future__ import annotations

import numpy as np

from app import ops
from app.ipc import shm

JSON_BYTES_PER_NUMBER = 26  # orjson's longest float64 ("-1.2345678901234567e-100") and a comma
OVERHEAD = 1 << 20  # headers, request objects and the like, per request


def estimate(op: str, rows: int, A: int, F: int, itemsize: int, npz: bool, K: int = 1, model: str = ops.BUILTIN) -> int:
    """Peak bytes one request of `rows` states adds while it runs and its answer is sent.

    Inputs (parsed, stacked, sent to the engine), TensorFlow's peak for the operation, the
    shared-memory segment the answer is written to, and the encoded answer. An npz answer is
    sent from the segment itself (no copy); a JSON answer is text, and a Hessian is first
    made contiguous for it (the engine returns one A×F×A×F block per row, broadcast over i).
    """
    contract = ops.OPERATIONS[op]
    given = sum(int(np.prod(s)) for s in contract.input_shapes(rows, A, F, K).values()) * itemsize
    inputs = 4 * given  # parsed, cast, stacked, and TensorFlow's copy
    out = ops.output_bytes(op, rows, A, F, itemsize, K, model)
    factor = contract.tf_peak + (contract.xla_peak if out <= ops.XLA_MAX_OUTPUT_BYTES else 0)
    tf_peak = int(factor * (out + given if contract.products else out))
    segment = shm.segment_size(out) if out > shm.INLINE_MAX else 0
    served = sum(int(np.prod(s)) for s in contract.shapes(rows, A, F, K, served=True).values()) * itemsize
    # A broadcast Hessian is made contiguous for JSON.
    broadcast = served if op == ops.HESSIAN and ops.MODELS[model].shared_hessian else 0
    encoded = 0 if npz else served // itemsize * JSON_BYTES_PER_NUMBER + broadcast
    return inputs + tf_peak + segment + encoded + OVERHEAD
