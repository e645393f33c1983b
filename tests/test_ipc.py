"""app/ipc/wire.py: big inputs and answers through shared memory, in place on the reading side, and
segments reused rather than created per request."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from jacobian_client import Client

from app.ipc import shm
from tests.support import oracles, servers


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="jacobian-test-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_inputs_filled_by_a_worker_are_read_in_place_by_the_engine(shm_dir: Path, rng: np.random.Generator) -> None:
    X = rng.normal(size=(3, 5))
    rows = {"0": np.broadcast_to(X, (2, 3, 5)), "1": rng.normal(size=(2, 5)).astype(np.float32)}
    arena = shm.Arena(str(shm_dir), "t")
    filled = arena.fill(rows)
    assert filled is not None
    segment, layout = filled
    assert all(offset % 64 == 0 for *_, offset in layout.entries)  # as TensorFlow needs in place

    views = shm.Mappings(str(shm_dir)).views(segment.name, segment.size, layout)
    assert views is not None
    for got, want in zip(views, rows.values(), strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype and got.flags.c_contiguous
    views[1][0, 0] = 42.0  # the engine's view is the worker's memory, not a copy
    assert layout.views(segment.mm)["1"][0, 0] == 42.0


def test_a_segment_its_worker_took_back_is_gone_for_the_engine(shm_dir: Path) -> None:
    arena = shm.Arena(str(shm_dir), "t")
    filled = arena.fill({"0": np.ones((512, 128))})
    assert filled is not None
    segment, layout = filled
    arena.discard(segment)
    assert shm.Mappings(str(shm_dir)).views(segment.name, segment.size, layout) is None


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
