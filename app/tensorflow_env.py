"""The environment TensorFlow reads once, when it is first imported; `app/__init__.py` applies it,
so every way of starting the service (`python -m app`, `make serve`, the containers, the tests,
the benchmark) gets it before any module imports TensorFlow.

Why oneDNN is held to AVX2. TensorFlow 2.21's x86 wheels route MatMul/BatchMatMul (and
convolutions) through oneDNN by default (TF_ENABLE_ONEDNN_OPTS). On CPUs with AVX-512 (Intel
Sapphire Rapids, AMD Zen 4) the oneDNN 3.7 `brg_matmul:avx512_core` kernel segfaults inside its
JIT-generated code on the batched matmul that pfor makes of MatVec's gradient in `batch_jacobian`:
an outer product per output, `64x1x64x1 : 1x1x1x256` with the weights transposed (`abdc`), for
float32 X from about 32×256 (64×256, 64×512, 128×64, …). `ONEDNN_VERBOSE=all` shows that primitive
created, then the process dies executing it; float64 takes TensorFlow's own Eigen kernels and
never crashes. `ONEDNN_MAX_CPU_ISA=AVX2` keeps oneDNN off its AVX-512 kernels, the crashing one
among them, and the crash canary (every operation, dtype and size the limits admit) stays green
with it. The service once turned oneDNN off altogether instead; that made convolutional models'
Jacobians 7.8× slower (ResNet50 at 64×64, B=4: 1721 ms against 222 ms) for no crash it prevented.
A caller's `TF_ENABLE_ONEDNN_OPTS=0` is still taken; the ISA cap is not negotiable.

Why the BFC CPU allocator. With oneDNN off, every large answer was a fresh mmap whose pages fault
in on first write (268 MB for a 256×1024 float32 J); TensorFlow's own BFC allocator pools them:
256×1024 float32 takes 21 ms instead of 66 ms (`python -m bench.onednn`). It keeps freed memory for
reuse, so RSS stays at its high-water mark.
"""

from __future__ import annotations

import os

FORCED = {"ONEDNN_MAX_CPU_ISA": "AVX2"}  # a crash is not a preference: overrides the caller's value
DEFAULTS = {
    "TF_CPU_ALLOCATOR_USE_BFC": "true",
    "TF_CPP_MIN_LOG_LEVEL": "2",  # hide C++ INFO/WARNING noise (e.g. "no CUDA driver")
}


def apply() -> None:
    """Set TensorFlow's start-up environment; a no-op for a TensorFlow already imported."""
    os.environ.update(FORCED)
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
