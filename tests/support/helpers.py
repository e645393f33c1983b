from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np

NPZ = "application/x-npz"


def npz_bytes(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_npz(content: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(content), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    """Poll for a state the test needs, instead of sleeping for a guessed duration."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample from Prometheus text: `name{labels}` (labels in the exposition's order)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def operation_inputs(op: str, batch: bool, dtype: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Small inputs for one operation (jacobian, hessian, hvp, vjp, jvp), named as in the API:
    one state or a batch of states, in one dtype."""
    A, F, B = (3, 4, 2) if op == "hessian" else (4, 6, 3)
    arrays = {"X": rng.normal(size=(A, F)), "Y": rng.normal(size=(B, F) if batch else F) / np.sqrt(F)}
    if op in ("hvp", "jvp"):
        arrays["V"] = rng.normal(size=(A, F))
    if op == "vjp":
        arrays["U"] = rng.normal(size=(B, A) if batch else A)
    return {k: v.astype(dtype) for k, v in arrays.items()}
