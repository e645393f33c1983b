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


def run_policy(engine: Any, op: str, wrt: tuple[str, ...], *rows: np.ndarray) -> Any:
    """The built-in model's `op` on rows as the service calls it (`app.service.front`): X (N, A, F),
    Y (N, F), and U (N, K, A), V (N, K, A, F), or hvp's one V (N, A, F). Returns the engine's
    result with its arrays under the original endpoints' names (W, J, J_Y, H, HV, UJ, JV)."""
    from types import SimpleNamespace

    from app.calls import Call
    from app.service.front import NAMES

    if op == "hvp":
        rows = (*rows[:2], rows[2][:, None])  # one direction: K = 1
    single = op == "vjp" and rows[2].shape[1] == 1
    result = engine.run(Call(op, wrt, ("W",), single=single, dtype=rows[0].dtype.name), *rows, model="policy")
    arrays = {NAMES[k]: a[:, 0] if op == "hvp" and k != "outputs|W" else a for k, a in result.arrays.items()}
    if op == "hessian":  # one per row, the same for every output: the service's view over them
        H = arrays["H"]
        arrays["H"] = np.broadcast_to(H, (H.shape[0], rows[0].shape[1], *H.shape[2:]))
    return SimpleNamespace(arrays=arrays, device=result.device, version=result.version)
