"""The README's PyMC example: NUTS samples a posterior whose likelihood calls the served `wide`
model through UM-Bridge (`umbridge.pymc.UmbridgeOp`, the real package's); its posterior mean is
the one of the same posterior sampled with the network local (in PyTensor), within Monte Carlo
error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support import nuts, servers
from tests.support.wrappers import readme_example


def test_nuts_through_the_service_samples_the_local_models_posterior(
    repository_server: tuple[servers.LiveServer, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, root = repository_server
    scope = readme_example("umbridge-pymc", server.url, monkeypatch)
    served = scope["trace"]
    printed = capsys.readouterr().out.strip().strip("[]").split()
    np.testing.assert_allclose(np.asarray(printed, float), nuts.posterior_mean(served), atol=1e-6)

    # The same posterior, the network local: a long chain, so the short one's error dominates.
    local = nuts.sample(nuts.local_wide(root / "wide" / "1"), scope["observed"], scope["sigma"], draws=2000, tune=500)
    error = np.hypot(nuts.monte_carlo_error(served), nuts.monte_carlo_error(local))
    difference = nuts.posterior_mean(served) - nuts.posterior_mean(local)
    assert np.all(np.abs(difference) < 4 * error), (difference, error)
    # The data move the posterior mean off the prior's (0) by twice that tolerance: the test can fail.
    assert np.abs(nuts.posterior_mean(local)).max() > 2 * 4 * error.max(), (nuts.posterior_mean(local), error)
