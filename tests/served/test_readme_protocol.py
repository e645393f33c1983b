"""The README's tritonclient example, run against a live server and checked against the closed form."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.served.test_readme_products import _block
from tests.support import oracles
from tests.support.oracles import assert_close
from tests.support.servers import LiveServer


def test_the_tritonclient_example_returns_w_and_j(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "JACOBIAN_URL", live_server.url)
    scope: dict[str, object] = {}
    exec(compile(_block("tritonclient-python", "python"), "README.md", "exec"), scope)
    X, Y = np.asarray(scope["X"]), np.asarray(scope["Y"])
    assert_close(np.asarray(scope["W"]), oracles.log_softmax(X, Y), 1e-12)
    assert_close(np.asarray(scope["J"]), oracles.jacobian(X, Y), 1e-12)
