"""app/serve/pushes.py: pushed versions on file, written once, removed as they retire, and made
again in order by an engine that starts; a file it cannot use is skipped, never fatal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.errors import UnknownModel
from app.serve.pushes import Pushes


class Engine:
    """An engine's push, as the replay calls it: what it was given, in order."""

    def __init__(self, refuse: str = "") -> None:
        self.pushed: list[tuple[str, int, dict[str, np.ndarray]]] = []
        self.refuse = refuse

    def push(self, model: str, values: dict[str, np.ndarray], number: int) -> Any:
        if model == self.refuse:
            raise UnknownModel(f"Unknown model {model!r}")
        self.pushed.append((model, number, values))


def test_versions_are_written_once_retired_with_their_version_and_replayed_in_order(tmp_path: Path) -> None:
    pushes = Pushes(str(tmp_path))
    reads: list[int] = []

    def values(k: int) -> Any:
        return lambda: reads.append(k) or {"dense/w0": np.full((2, 3), float(k)), "b": np.arange(k)}

    for k in (2, 3, 10):
        pushes.record("mlp", k, values(k), kept=(k - 1, k) if k < 10 else (3, 10))
    pushes.record("mlp", 10, values(10), kept=(3, 10))  # the second engine's: no values read
    assert reads == [2, 3, 10]
    assert sorted(p.name for p in (tmp_path / "pushed" / "mlp").iterdir()) == ["10.npz", "3.npz"]

    engine = Engine()
    assert pushes.replay(engine) == 2
    assert [(m, n) for m, n, _ in engine.pushed] == [("mlp", 3), ("mlp", 10)]  # numerically, not by name
    np.testing.assert_array_equal(engine.pushed[1][2]["dense/w0"], np.full((2, 3), 10.0))
    np.testing.assert_array_equal(engine.pushed[1][2]["b"], np.arange(10))


def test_a_file_that_cannot_be_used_is_skipped(tmp_path: Path) -> None:
    pushes = Pushes(str(tmp_path))
    pushes.record("gone", 2, lambda: {"w": np.ones(2)}, kept=(1, 2))
    pushes.record("mlp", 2, lambda: {"w": np.ones(2)}, kept=(1, 2))
    (tmp_path / "pushed" / "mlp" / "3.npz").write_bytes(b"not an npz")
    (tmp_path / "pushed" / "mlp" / "notes.npz").write_bytes(b"not a version")
    engine = Engine(refuse="gone")
    assert pushes.replay(engine) == 1
    assert [(m, n) for m, n, _ in engine.pushed] == [("mlp", 2)]


def test_nothing_on_file_replays_nothing(tmp_path: Path) -> None:
    engine = Engine()
    assert Pushes(str(tmp_path)).replay(engine) == 0 and engine.pushed == []


def test_a_version_that_cannot_be_written_is_still_pushed_and_logged(tmp_path: Path, caplog: Any) -> None:
    (tmp_path / "pushed").write_text("a file where the folder should be")  # mkdir fails: OSError
    Pushes(str(tmp_path)).record("mlp", 2, lambda: {"w": np.ones(2)}, kept=(1, 2))
    assert "pushed version 2 of mlp not kept on file" in caplog.text
