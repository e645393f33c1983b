"""Unit tests: no TensorFlow, no server, no container. Run alone (`pytest tests/unit`, as
`make test` does first), importing TensorFlow fails the test that does it, so a layer that starts
to need it is caught (the rule `lint-imports` states for `app`, checked for what the tests drive).
In a whole-suite run other tests have loaded TensorFlow already, and there is nothing to check."""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

import pytest


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "tensorflow" or name.startswith(("tensorflow.", "app.engine")):
            raise ImportError(f"unit tests run without TensorFlow; something imported {name}")


@pytest.fixture(autouse=True, scope="package")
def _without_tensorflow() -> Any:
    if "tensorflow" in sys.modules:
        yield
        return
    finder = _NoTensorFlow()
    sys.meta_path.insert(0, finder)
    yield
    sys.meta_path.remove(finder)
