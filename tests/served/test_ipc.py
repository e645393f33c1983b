"""Shared memory through live engine processes: big inputs and answers pass through it correctly
(app.ipc.shm, app.ipc.client), and one segment is reused rather than one created per request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jacobian_client import Client

from app.ipc import shm
from tests.support import oracles, servers


def test_big_inputs_pass_through_shared_memory_correctly_and_reuse_one_segment(
    tmp_path: Path, shm_dir: Path, rng: np.random.Generator
) -> None:
    """1 MiB of X and of V per request, over INLINE_MAX: the worker copies them into a segment
    the engine reads in place. Answers are right, and the segments do not grow in number."""
    X = rng.normal(size=(256, 512))
    y = rng.normal(size=512) / np.sqrt(512)
    counts = []
    env = {"JACOBIAN_SHM_DIR": str(shm_dir), "JACOBIAN_WORKERS": "1"}
    with servers.running(tmp_path, env) as server, Client(server.url, retries=0) as client:
        for transport in ("npz", "npz", "npz", "json"):
            client.transport = transport
            V = rng.normal(size=(256, 512))
            assert X.nbytes + V.nbytes > shm.INLINE_MAX
            np.testing.assert_allclose(client.jvp(X, y, V).JV, oracles.jvp(X, y, V), rtol=1e-9, atol=1e-12)
            counts.append(len(list(shm_dir.iterdir())))
    assert counts == [counts[0]] * 4 and counts[0] >= 1, counts  # reused, not one more per request
    assert not list(shm_dir.iterdir())  # all removed at shutdown
