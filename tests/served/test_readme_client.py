"""The README's Python client example, run against a live server."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.served.test_readme_products import _block
from tests.support import oracles
from tests.support.oracles import assert_close
from tests.support.servers import LiveServer


def test_the_client_example_runs_and_is_right(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(os.environ, "JACOBIAN_URL", live_server.url)
    scope: dict[str, object] = {}
    exec(compile(_block("client-python", "python"), "README.md", "exec"), scope)
    r, batch = scope["r"], scope["batch"]
    X0, y0 = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]), np.array([1.0, 2.0, 3.0, 4.0])
    assert_close(r.J, oracles.jacobian(X0, y0), 1e-9)  # type: ignore[attr-defined]
    X, states = np.asarray(scope["X"]), np.asarray(scope["states"])
    assert batch.J.shape == (32, 6, 6, 8) and batch.J_Y.shape == (32, 6, 8)  # type: ignore[attr-defined]
    assert_close(batch.J_Y[3], oracles.jacobian_y(X, states[3]), 1e-9)  # type: ignore[attr-defined]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"(2,) (2, 2, 4) float64 {r.device}"  # type: ignore[attr-defined]
    assert printed[1].startswith("422 invalid_input Y has 5 entries but X has 8 columns")
