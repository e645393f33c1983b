"""The memory budget: what a request may cost before it runs, and the ledger of what requests in
flight have claimed. No TensorFlow, no web imports.

A request claims its estimated peak (`estimate`) before it queues and gives it back when its
answer has been sent, or when it is dropped. One ledger per engine holds every worker's claims,
so the budget covers the engine and all HTTP workers together.

`estimate` is built from measurements, not guesses: `python -m bench.memory` prints, for each
operation at three sizes, the estimate against the measured peak of all the service's processes
(bench/results.md). TensorFlow's part is a multiple of the engine's output, measured as process
memory (its BFC allocator's own statistics read lower: 1.0× for a one-row Jacobian, 3.0× for a
Hessian-vector product; the process holds more, up to 1.16× and 4.3× here). A shape served
by XLA (outputs up to `ops.XLA_MAX_OUTPUT_BYTES`) holds XLA's buffers beside that pool: 2.3× for
a Jacobian and 7.7× for a Hessian-vector product, measured the same way.
Big requests are never stacked into one call (`app.batcher.take_batch`), so these one-row
factors hold for every call that matters for memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app import ipc, ops

TF_PEAK = {  # TensorFlow's peak process memory as a multiple of the engine's output (see above)
    ops.JACOBIAN: 1.2,
    ops.JACOBIAN_Y: 1.2,
    ops.JACOBIAN_XY: 1.2,
    ops.HESSIAN: 1.6,
    ops.HVP: 4.4,
    # The products: a multiple of output and inputs together (for /jvp the tangents outweigh W).
    ops.VJP: 1.0,
    ops.JVP: 1.0,
}
XLA_PEAK = {  # the same for XLA's own buffers, which shapes up to ops.XLA_MAX_OUTPUT_BYTES also hold
    ops.JACOBIAN: 2.4,
    ops.JACOBIAN_Y: 2.4,
    ops.JACOBIAN_XY: 2.4,
    ops.HESSIAN: 2.0,
    ops.HVP: 8.0,
    ops.VJP: 1.0,
    ops.JVP: 1.0,
}
JSON_BYTES_PER_NUMBER = 26  # orjson's longest float64 ("-1.2345678901234567e-100") and a comma
OVERHEAD = 1 << 20  # headers, request objects and the like, per request


def estimate(op: str, rows: int, A: int, F: int, itemsize: int, npz: bool, K: int = 1) -> int:
    """Peak bytes one request of `rows` states adds while it runs and its answer is sent.

    Inputs (parsed, stacked, sent to the engine), TensorFlow's peak for the operation, the
    shared-memory segment the answer is written to, and the encoded answer. An npz answer is
    sent from the segment itself (no copy); a JSON answer is text, and a Hessian is first
    made contiguous for it (the engine returns one A×F×A×F block per row, broadcast over i).
    """
    contract = ops.OPERATIONS[op]
    given = sum(int(np.prod(s)) for s in contract.input_shapes(rows, A, F, K).values()) * itemsize
    inputs = 4 * given  # parsed, cast, stacked, and TensorFlow's copy
    out = ops.output_bytes(op, rows, A, F, itemsize, K)
    factor = TF_PEAK[op] + (XLA_PEAK[op] if out <= ops.XLA_MAX_OUTPUT_BYTES else 0)
    tf_peak = int(factor * (out + given if op in (ops.VJP, ops.JVP) else out))
    segment = ipc.segment_size(out) if out > ipc.INLINE_MAX else 0
    served = sum(int(np.prod(s)) for s in contract.shapes(rows, A, F, K, served=True).values()) * itemsize
    encoded = 0 if npz else served // itemsize * JSON_BYTES_PER_NUMBER + (served if op == ops.HESSIAN else 0)
    return inputs + tf_peak + segment + encoded + OVERHEAD


# ---- the default budget


def default_budget(cgroup_root: str = "/sys/fs/cgroup", meminfo: str = "/proc/meminfo") -> int:
    """Half of the container's memory limit when there is one, else a quarter of physical memory."""
    limit = cgroup_limit(cgroup_root)
    return limit // 2 if limit is not None else physical_memory(meminfo) // 4


def describe_default(cgroup_root: str = "/sys/fs/cgroup", meminfo: str = "/proc/meminfo") -> str:
    limit = cgroup_limit(cgroup_root)
    if limit is not None:
        return f"half of the container's memory limit of {limit:,} bytes"
    return f"a quarter of the {physical_memory(meminfo):,} bytes of physical memory (no container limit)"


def cgroup_limit(root: str = "/sys/fs/cgroup") -> int | None:
    """This process's cgroup memory limit (v2 `memory.max`, else v1 `memory.limit_in_bytes`); None
    when unlimited or not found."""
    candidates = [Path(root, own_cgroup().lstrip("/"), "memory.max"), Path(root, "memory.max")]
    candidates.append(Path(root, "memory", "memory.limit_in_bytes"))
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        value = int(text)
        return value if value < 1 << 60 else None  # v1 says "unlimited" with a huge number
    return None


def cgroup_cpus(root: str = "/sys/fs/cgroup") -> int | None:
    """This process's cgroup CPU quota in whole CPUs, rounded up (v2 `cpu.max`, else v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None when unlimited or not found."""
    for path in (Path(root, own_cgroup().lstrip("/"), "cpu.max"), Path(root, "cpu.max")):
        try:
            quota, period = path.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    try:
        quota_us = int(Path(root, "cpu", "cpu.cfs_quota_us").read_text())
        period_us = int(Path(root, "cpu", "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else max(1, -(-quota_us // period_us))


def own_cgroup() -> str:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return "/"


def physical_memory(meminfo: str = "/proc/meminfo") -> int:
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# ---- the ledger


@dataclass
class Ledger:
    """Bytes claimed by requests in flight against the budget."""

    budget: int
    claimed: int = 0

    def fits(self, nbytes: int) -> bool:
        # With nothing claimed, anything runs: a request the worker let through (it checks each
        # against the whole budget) must never wait for memory that can never free up.
        return self.claimed == 0 or self.claimed + nbytes <= self.budget

    def claim(self, nbytes: int) -> None:
        self.claimed += nbytes

    def release(self, nbytes: int) -> None:
        self.claimed = max(self.claimed - nbytes, 0)
