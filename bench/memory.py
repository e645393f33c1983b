"""`python -m bench.memory`: the memory budget's estimate against the measured peak, per operation.

Starts the service (`python -m app`, one HTTP worker), then for each operation at three sizes
posts one npz request and samples the memory of all the service's processes every few ms while
it runs and its answer is sent. Memory is what the processes hold, counted once: each process's
private and file-backed resident pages (RssAnon + RssFile) plus what the shared-memory filesystem
holds (RssShmem would count a segment in both the engine and the worker that map it).
TensorFlow's BFC allocator keeps what it has grown to, so sizes run small to large and each
peak is taken over the idle service, not over the previous request.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from jacobian_client import Client

from app.catalog import card_from_dict
from app.endpoints import BUILTIN, ENDPOINTS
from app.service import budget, front, seed
from bench.servers import tree

SIZES = {
    "/jacobian": ("jacobian", [(64, 512), (128, 1024), (256, 1024)]),
    "/hessian": ("hessian", [(8, 32), (12, 48), (16, 64)]),
    "/hvp": ("hvp", [(64, 512), (128, 1024), (256, 1024)]),
    "/vjp": ("vjp", [(256, 1024), (512, 1024), (512, 2048)]),  # with K = PRODUCTS_K cotangents
    "/jvp": ("jvp", [(256, 512), (512, 512), (512, 1024)]),  # with K = PRODUCTS_K tangents
}
PRODUCTS_K = 2
QUICK = {"/jacobian": ("jacobian", [(8, 16)])}  # the smoke test's


def _status_bytes(pid: int, fields: tuple[str, ...]) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in fields:
            total += int(value.split()[0]) * 1024
    return total


def service_bytes(root_pid: int, shm_dir: str = "/dev/shm") -> int:
    """Memory held by the process tree under `root_pid` plus what the shared-memory filesystem
    holds (segments counted once, including removed ones a process still maps)."""
    total = 0
    for pid in tree(root_pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += _status_bytes(pid, ("RssAnon", "RssFile"))
    st = os.statvfs(shm_dir)
    return total + (st.f_blocks - st.f_bfree) * st.f_frsize


class PeakSampler:
    """Samples `service_bytes` in a thread until stopped; `.peak` is the largest seen."""

    def __init__(self, root_pid: int, every_s: float = 0.005) -> None:
        self.root_pid, self.every_s = root_pid, every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, service_bytes(self.root_pid))
            time.sleep(self.every_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


def arrays_for(op: str, A: int, F: int, K: int = PRODUCTS_K, seed: int = 0) -> dict[str, np.ndarray]:
    """One state of an A×F problem for `op`, with its other inputs (U or V) as its endpoint has them."""
    rng = np.random.default_rng(seed)
    size = {"A": A, "F": F, "K": K}
    shapes = {name: tuple(size[d] for d in shape[1:]) for name, shape in ENDPOINTS[op].inputs.items()}
    arrays = {name: rng.normal(size=shape) for name, shape in shapes.items()}
    arrays["Y"] /= np.sqrt(F)
    return arrays


def estimate(card: dict[str, Any], op: str, arrays: dict[str, np.ndarray]) -> int:
    """The service's own estimate of this request (`app.service.budget`), from the built-in
    model's card as the service reports it (its peak factors measured on first use)."""
    e = ENDPOINTS[op]
    request = seed.from_named(arrays, "float64", e.products)
    return budget.estimate(front.problem(card_from_dict(card), e, request), npz=True)


def measure(url: str, root_pid: int, path: str, op: str, sizes: list[tuple[int, int]]) -> list[Any]:
    """(path, size, estimate, measured peak over idle, idle) for one operation at its sizes."""
    rows = []
    with Client(url, timeout=300, retries=0) as client:
        for A, F in sizes:
            arrays = arrays_for(op, A, F)
            time.sleep(0.5)
            idle = service_bytes(root_pid)
            with PeakSampler(root_pid) as sampler:
                getattr(client, path.lstrip("/"))(**arrays)  # npz both ways, as the estimate assumes
            card = client.model(BUILTIN).card()
            rows.append((path, f"{A}×{F}", estimate(card, op, arrays), sampler.peak - idle, idle))
    return rows


def table(rows: list[tuple[str, str, int, int, int]]) -> str:
    lines = [
        "| operation (float64, npz) | size | estimate | measured peak over idle | measured / estimate |",
        "|---|---|---|---|---|",
    ]
    for path, size, est, peak, _idle in rows:
        lines.append(f"| {path} | {size} | {est / 2**20:.0f} MiB | {peak / 2**20:.0f} MiB | {peak / est:.2f} |")
    return "\n".join(lines)


def run(port: int = 8190, sizes: dict[str, tuple[str, list[tuple[int, int]]]] = SIZES) -> list[Any]:
    """Each operation on a service of its own (TensorFlow's pool and the shared-memory segments
    one operation leaves would hide the next one's peak)."""
    from bench.servers import PROJECT, server

    rows = []
    for path, (op, shapes) in sizes.items():
        with server("project", PROJECT, port, {"JACOBIAN_WORKERS": "1"}) as s:
            rows += measure(f"http://127.0.0.1:{port}", s.proc.pid, path, op, shapes)
    return rows


def main() -> int:
    print(table(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
