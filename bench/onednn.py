"""What oneDNN's settings cost or save: the engine's Jacobian at 2×4, 64×512 and 256×1024 in
both dtypes, under TensorFlow's default (oneDNN on, every ISA), oneDNN on but held to AVX2,
oneDNN off with either allocator, and as served (oneDNN held to AVX2, BFC CPU allocator; plain
graph and XLA). Each case runs in a child
process, since these settings are read once when TensorFlow is imported, and a case that kills
its child (the oneDNN AVX-512 segfault) is reported as such.

    python -m bench.onednn          # prints a markdown table
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(2, 4), (64, 512), (256, 1024)]
CONFIGS = {
    "oneDNN on, all ISAs (TensorFlow's default)": {
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "ONEDNN_MAX_CPU_ISA": "ALL",
        "TF_CPU_ALLOCATOR_USE_BFC": "false",
    },
    "oneDNN on, ISA capped at AVX2": {
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "TF_CPU_ALLOCATOR_USE_BFC": "false",
    },
    "oneDNN off, default allocator": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPU_ALLOCATOR_USE_BFC": "false"},
    "oneDNN off, BFC allocator": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPU_ALLOCATOR_USE_BFC": "true"},
    "oneDNN on, ISA capped at AVX2, BFC allocator (served)": {
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "TF_CPU_ALLOCATOR_USE_BFC": "true",
    },
}


def child(A: int, F: int, dtype: str, path: str) -> None:
    """Median ms of one engine Jacobian call (outputs as NumPy views, as served)."""
    import numpy as np
    import tensorflow as tf  # before `app`, so the environment set by the parent holds

    from app.calls import Call
    from app.engine import derivatives as engine
    from app.engine.kernels import Kernel

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(1, A, F)) * 0.1).astype(dtype)
    Y = rng.normal(size=(1, F)).astype(dtype)
    loaded = engine.Engine().repository["policy"]
    assert loaded.graph is not None
    kernel = Kernel(loaded.card, loaded.graph, Call("jacobian", ("X",), ("W",), dtype=dtype))
    fn = tf.function(kernel, input_signature=kernel.signature(), jit_compile=path == "xla")
    call = fn.get_concrete_function()
    n = 10 if A * A * F > 2**22 else 200
    times = []
    for _ in range(n + 2):
        t = time.perf_counter()
        out = {k: np.from_dlpack(v) for k, v in call(X, Y).items()}
        times.append(time.perf_counter() - t)
        del out
    print(json.dumps({"ms": statistics.median(times[2:]) * 1e3, "onednn": engine.onednn_enabled()}))


def measure(config: dict[str, str], A: int, F: int, dtype: str, path: str) -> str:
    from app import lifeline  # not at the top: the child must import TensorFlow before `app`

    env = {**os.environ, **config, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [sys.executable, "-m", "bench.onednn", str(A), str(F), dtype, path]
    proc = subprocess.run(lifeline.command(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode < 0:
        return f"crashed ({signal.Signals(-proc.returncode).name})"
    if proc.returncode != 0:
        return f"failed ({proc.stderr.strip().splitlines()[-1][:60]})"
    return f"{json.loads(proc.stdout.strip().splitlines()[-1])['ms']:.2f} ms"


DTYPES = ("float32", "float64")


def table(
    shapes: list[tuple[int, int]] = SHAPES, dtypes: tuple[str, ...] = DTYPES, configs: dict[str, Any] = CONFIGS
) -> str:
    """One process per cell: each configuration × dtype × shape."""
    runs = [(name, cfg, "graph") for name, cfg in configs.items()]
    runs.append(("oneDNN ≤ AVX2, BFC allocator, XLA (served for hot shapes)", CONFIGS[list(CONFIGS)[-1]], "xla"))
    heads = [f"{A}×{F} {dtype}" for dtype in dtypes for A, F in shapes]
    lines = ["| engine Jacobian, median per call | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for name, cfg, path in runs:
        cells = [measure(cfg, A, F, dtype, path) for dtype in dtypes for A, F in shapes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 5:
        child(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        print(table())
