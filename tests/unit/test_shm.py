"""app/ipc/shm.py: big inputs and answers through shared memory, in place on the reading side, and
segments given back by their worker gone for the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.ipc import shm


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
