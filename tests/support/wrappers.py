"""What the tests of the client's JAX and TensorFlow wrappers share: closeness with a tolerance
relative to the largest entry, request counting, and running a README example against a server."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest


def close(got: Any, want: Any, rtol: float) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(np.abs(want).max(), 1e-300))


def requests(f: Any, run: Callable[[], Any]) -> tuple[Any, int]:
    """run()'s result and how many HTTP requests the wrapped function `f` made for it."""
    before = f.remote.requests
    out = run()
    return out, f.remote.requests - before


def readme_example(marker: str, url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The README's Python block after `<!-- marker -->`, run against `url`: its variables."""
    from tests.served.test_readme_products import _block

    monkeypatch.setitem(os.environ, "JACOBIAN_URL", url)
    scope: dict[str, Any] = {}
    exec(compile(_block(marker, "python"), "README.md", "exec"), scope)
    return scope
