"""Child process of tests/canary/test_crash_canary.py's repository case: every operation of every
example repository model through a real engine, at the sizes the benchmark and the README use
(float32 Jacobians of the 64→256→256→16 MLP at B=256, its policy gradient at B=4096), printing
``start <case>`` before and ``ok <case>`` after each, so a native fault names the case it hit, and
its peak resident memory (``peak_rss <bytes>``) at the end."""

from __future__ import annotations

import resource
import sys

import numpy as np

import app  # noqa: F401  (sets TensorFlow's environment before the engine imports it)
from app import calls
from app.catalog import BUILTIN, VARIABLES
from app.engine.derivatives import Engine

BATCH = {"mlp": 256}


def main(root: str) -> None:
    engine = Engine(model_repository=root)
    rng = np.random.default_rng(11)
    for name, loaded in sorted(engine.repository.items()):
        if name == BUILTIN:  # canary_child.py's grid
            continue
        card = loaded.card
        B = BATCH.get(name, 64)
        inputs = [
            rng.normal(size=(B, *t.shape[1:])).astype(t.dtype) if t.floating else np.zeros((B, *t.shape[1:]), t.dtype)
            for t in card.inputs
        ]
        for op in calls.OPERATIONS:
            call = calls.example_call(card, op)
            cases = [call]
            if op == calls.VJP and card.variables:
                cases.append(calls.Call(op, (VARIABLES,), call.of, sum_batch=True))
            for c in cases:
                tensors = {t.name: t for t in card.inputs + card.outputs}
                rows_b = 4096 if c.sum_batch else B
                rows = [np.resize(r, (rows_b, *r.shape[1:])) for r in inputs]
                rows += [
                    rng.normal(size=(rows_b, 2, *tensors[n].shape[1:])).astype(tensors[n].dtype)
                    for n in c.product_names()
                ]
                label = f"{name}/{op}/{','.join(c.wrt)}/{'sum' if c.sum_batch else rows_b}"
                print("start", label, flush=True)
                out = engine.model_calls.run(name, c, tuple(rows)).arrays
                assert all(np.isfinite(a).all() for a in out.values()), label
                print("ok", label, flush=True)
    print("peak_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
