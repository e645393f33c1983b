"""Pushed versions outlive the engine process that holds them. Each is also a file in the
supervisor's runtime directory (`pushed/<model>/<number>.npz`: every variable's values, so a
version needs no other), written by the first engine to make it and removed when it retires; an
engine that starts (a restart after a crash) makes them again, with their numbers, before it
answers anything. So every engine serves the same versions whichever of them died. The files go
with the runtime directory: a new supervisor starts from the repository's values."""

from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import ServiceError

log = logging.getLogger("app")


class Pushes:
    def __init__(self, runtime_dir: str) -> None:
        self.root = Path(runtime_dir) / "pushed"

    def record(
        self, model: str, number: int, values: Callable[[], dict[str, np.ndarray]], kept: tuple[int, ...]
    ) -> None:
        """Version `number` of `model` on file (once: a push repeated to every engine finds it,
        and reads no values), and no file of a version `kept` no longer holds."""
        folder = self.root / model
        path = folder / f"{number}.npz"
        partial = folder / f".{number}-{os.getpid()}.partial"  # a reader never sees half a file
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                with partial.open("wb") as f:
                    np.savez(f, **values())  # type: ignore[arg-type]
                os.replace(partial, path)
        except OSError as err:  # a full disk: the version is still served, it only would not outlive a restart
            log.warning("pushed version %d of %s not kept on file: %s", number, model, err)
            with contextlib.suppress(OSError):
                partial.unlink()
        for old in _versions(folder):
            if int(old.stem) not in kept:
                with contextlib.suppress(FileNotFoundError):  # another engine's retirement
                    old.unlink()

    def replay(self, engine: Any) -> int:
        """Every version on file pushed to `engine` (oldest first, with its number): how many."""
        count = 0
        for folder in sorted(p for p in self.root.glob("*") if p.is_dir()):
            for path in _versions(folder):
                try:
                    with np.load(path) as archive:
                        values = {name: archive[name] for name in archive.files}
                    engine.push(folder.name, values, int(path.stem))
                except (
                    ServiceError,
                    OSError,
                    ValueError,
                    zipfile.BadZipFile,
                ) as err:  # the model gone, or no longer takes them
                    log.warning("pushed version %s not made again: %s", path, err)
                    continue
                count += 1
        if count:
            log.info("%d pushed version(s) made again from %s", count, self.root)
        return count


def _versions(folder: Path) -> list[Path]:
    """The version files in `folder`, oldest first (by number: 10 after 9); nothing else there."""
    return sorted((p for p in folder.glob("*.npz") if p.stem.isdigit()), key=lambda p: int(p.stem))
