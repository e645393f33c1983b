"""The environment TensorFlow reads once, when it is first imported; `app/__init__.py` applies it,
so every way of starting the service (`python -m app`, `make serve`, the containers, the tests,
the benchmark) gets it before any module imports TensorFlow.

Why oneDNN is off. TensorFlow 2.21's x86 wheels route MatMul/BatchMatMul through oneDNN by
default (TF_ENABLE_ONEDNN_OPTS). On CPUs with AVX-512 (Intel Sapphire Rapids, AMD Zen 4) the
oneDNN 3.7 `brg_matmul:avx512_core` kernel segfaults inside its JIT-generated code on the batched
matmul that pfor makes of MatVec's gradient in `batch_jacobian`: an outer product per output,
`64x1x64x1 : 1x1x1x256` with the weights transposed (`abdc`), for float32 X from about 32×256
(64×256, 64×512, 128×64, …). `ONEDNN_VERBOSE=all` shows that primitive created, then the process
dies executing it; float64 takes TensorFlow's own Eigen kernels and never crashes. Turning oneDNN
off removes every oneDNN kernel, not just that one, so the fix does not depend on which CPU or
which operation (a user's own model will have matmuls of every shape).

XLA's CPU code still calls oneDNN's `dnnl_sgemm` for float32 dots whatever
TF_ENABLE_ONEDNN_OPTS says (`ONEDNN_VERBOSE=1` shows `gemm_api`). That is not the kernel that
crashes, and no case in the crash canary crashes it, but `ONEDNN_MAX_CPU_ISA=AVX2` keeps every
oneDNN code left in the process off its AVX-512 kernels too, at no measurable cost for those
small dots.

Why the BFC CPU allocator. With oneDNN on, TensorFlow also used oneDNN's pooling CPU allocator;
without it every large answer is a fresh mmap whose pages fault in on first write (268 MB for a
256×1024 float32 J). TensorFlow's own BFC allocator pools them: 256×1024 float32 takes 21 ms
instead of 66 ms with oneDNN off alone (`python -m bench.onednn`). It keeps freed memory for reuse,
as the oneDNN allocator did, so RSS stays at its high-water mark.
"""

from __future__ import annotations

import os

FORCED = {"TF_ENABLE_ONEDNN_OPTS": "0"}  # a crash is not a preference: overrides the caller's value
DEFAULTS = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "TF_CPU_ALLOCATOR_USE_BFC": "true",
    "TF_CPP_MIN_LOG_LEVEL": "2",  # hide C++ INFO/WARNING noise (e.g. "no CUDA driver")
}


def apply() -> None:
    """Set TensorFlow's start-up environment; a no-op for a TensorFlow already imported."""
    os.environ.update(FORCED)
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
