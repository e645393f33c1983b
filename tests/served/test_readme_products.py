"""The README's policy-gradient example, curl and Python, run against a live server."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np

from tests.support import oracles
from tests.support.oracles import assert_close
from tests.support.servers import LiveServer

README = (Path(__file__).parents[2] / "README.md").read_text()


def _block(marker: str, language: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)```", README, flags=re.S)
    assert found, f"README has no {marker} block"
    return found.group(1)


def _policy_gradient(X: np.ndarray, states: np.ndarray, actions: np.ndarray, advantages: np.ndarray) -> np.ndarray:
    """Σ_b advantage_b · ∇_X log π(a_b | s_b), from the closed-form Jacobian."""
    return sum(advantages[b] * oracles.jacobian(X, states[b])[actions[b]] for b in range(len(states)))


def test_the_curl_example_returns_the_policy_gradient(live_server: LiveServer) -> None:
    command = _block("policy-gradient-curl", "sh").replace("http://127.0.0.1:8000", live_server.url)
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60, check=True).stdout
    body = json.loads(command.split("-d '", 1)[1].rsplit("'", 1)[0])
    U = np.array(body["U"])
    actions, advantages = (
        U.argmax(axis=1) * 0 + np.abs(U).argmax(axis=1),
        U[np.arange(len(U)), np.abs(U).argmax(axis=1)],
    )
    want = _policy_gradient(np.array(body["X"]), np.array(body["Y"]), actions, advantages)
    assert_close(np.array(json.loads(out)["UJ"]), want, 1e-9)


def test_the_python_example_computes_the_policy_gradient(live_server: LiveServer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(os.environ, "JACOBIAN_URL", live_server.url)
    scope: dict[str, object] = {}
    exec(compile(_block("policy-gradient-python", "python"), "README.md", "exec"), scope)
    want = _policy_gradient(scope["X"], scope["states"], scope["actions"], scope["advantages"])  # type: ignore[arg-type]
    assert_close(scope["grad"], want, 1e-9)  # type: ignore[arg-type]
    assert np.shape(scope["X_next"]) == np.shape(scope["X"])
