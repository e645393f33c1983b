"""The README's PyMC posterior: a standard normal prior on the `wide` example model's input x (5
numbers), its output (2 numbers) observed with Gaussian noise. Sampled by PyMC's NUTS with the
model either served (UM-Bridge, through `umbridge.pymc.UmbridgeOp`) or local: the same network in
PyTensor from the SavedModel's variables, differentiated by PyTensor's own autodiff."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.model_oracles import variables

Mean = Callable[[Any], Any]  # PyTensor vector x ↦ PyTensor vector: the likelihood's mean


def local_wide(path: Path) -> Mean:
    """examples/build_models.py's `wide` (tanh, then linear) in PyTensor, at the stored variables."""
    import pytensor.tensor as pt

    p = variables(path)

    def wide(x: Any) -> Any:
        return pt.dot(pt.tanh(pt.dot(x, p["dense/w0"]) + p["dense/b0"]), p["dense/w1"]) + p["dense/b1"]

    return wide


def sample(mean: Mean, observed: np.ndarray, sigma: float, draws: int, tune: int, seed: int = 1) -> Any:
    """One NUTS chain of the posterior of x: the README's model, with `mean` as the network. The
    tuning steps' statistics are kept (`warmup_sample_stats`): the benchmark counts them."""
    import pymc as pm

    with pm.Model():
        x = pm.Normal("x", 0.0, 1.0, shape=5)
        pm.Normal("y", mu=mean(x), sigma=sigma, observed=observed)
        return pm.sample(
            draws=draws,
            tune=tune,
            chains=1,
            cores=1,
            random_seed=seed,
            progressbar=False,
            compute_convergence_checks=False,
            discard_tuned_samples=False,
        )


def posterior_mean(trace: Any) -> np.ndarray:
    return np.asarray(trace.posterior["x"].mean(("chain", "draw")).values)


def monte_carlo_error(trace: Any) -> np.ndarray:
    """The standard error of the chain's mean of each x_i, from its effective sample size (ArviZ)."""
    import arviz as az

    return np.asarray(az.mcse(trace, var_names=["x"])["x"].values)
