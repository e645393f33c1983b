"""Unit tests: no TensorFlow, no server, no container. Importing TensorFlow here fails the test
that does it, so a layer that starts to need it is caught (the rule `lint-imports` states for
`app`, checked for what the tests drive)."""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

import pytest


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "tensorflow" or name.startswith(("tensorflow.", "app.engine")):
            raise ImportError(f"unit tests run without TensorFlow; something imported {name}")


@pytest.fixture(autouse=True, scope="session")
def _without_tensorflow() -> Any:
    assert "tensorflow" not in sys.modules, "TensorFlow was imported before the unit tests ran"
    finder = _NoTensorFlow()
    sys.meta_path.insert(0, finder)
    yield
    sys.meta_path.remove(finder)
