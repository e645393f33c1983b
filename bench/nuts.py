"""Issue 37's second goal: one NUTS chain of 500 draws (after 500 tuning steps) of the README's
PyMC posterior with the `wide` model served (UM-Bridge through `umbridge.pymc.UmbridgeOp`: an
`Evaluate` and a `Gradient` per leapfrog step), its wall time beside the same chain with the
network local (PyTensor, from the same variables). Reported, no goal: the served chain pays two
HTTP round trips per step where the local one pays microseconds."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tests.support import nuts

OBSERVED, SIGMA = np.array([1.5, -1.0]), 0.5  # the README's


def chains(url: str, repo: Path, draws: int) -> list[str]:
    """The two chains, timed one after the other (each is seconds long): a table's lines."""
    from umbridge.pymc import UmbridgeOp

    local = nuts.local_wide(repo / "wide" / "1")
    means = {"served (UM-Bridge)": UmbridgeOp(url + "/umbridge", "wide"), "local (PyTensor)": local}
    nuts.sample(local, OBSERVED, SIGMA, draws=5, tune=5)  # PyTensor's compilation, once, for both
    lines = [
        f"| NUTS chain, wide, {draws} draws after {draws} tuning | wall s | leapfrog steps | ms per step | posterior mean |",
        "|---|---|---|---|---|",
    ]
    for name, mean in means.items():
        start = time.perf_counter()
        trace = nuts.sample(mean, OBSERVED, SIGMA, draws=draws, tune=draws)
        seconds = time.perf_counter() - start
        steps = int(trace.sample_stats["n_steps"].sum() + trace.warmup_sample_stats["n_steps"].sum())
        posterior = np.array2string(nuts.posterior_mean(trace), precision=2)
        lines.append(f"| {name} | {seconds:.1f} | {steps} | {seconds / steps * 1e3:.2f} | {posterior} |")
    return lines
