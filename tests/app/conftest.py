"""The app tier's shared repository: one test repository, built and loaded once for the run, and
the app serving it in this process (its models loaded once: the slowest start-up of the tier;
each operation traced and calibrated on its first use). Tests that read from it share it; a test
that needs other settings with the same models starts an app around its engine
(`started_client(settings, engine=...)`). Its modules are one group of `tests/conftest.py`'s
`SHARED_SERVERS`, run by one pytest-xdist worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from app.config import Settings
from examples import build_models
from tests.support import edge_models
from tests.support.clients import REPOSITORY_READY_S, started_client


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example repository, the edge models (tests/support/edge_models.py), a model whose
    output size is open, the float64 model with dependent examples (`whole`), a broken model and
    one under the built-in's name."""
    root = tmp_path_factory.mktemp("repo")
    build_models.build(root)
    edge_models.save_logm(root)
    edge_models.save_rounded(root)
    edge_models.save_captured_constants(root)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float64, name="x")])
    def open_size(x: tf.Tensor) -> dict[str, tf.Tensor]:  # an output size the signature leaves open
        return {"y": tf.concat([x, x * x], axis=1)}

    tf.saved_model.save(tf.Module(), str(root / "open" / "1"), signatures={"serving_default": open_size})
    # The float64 model again, its examples declared dependent: the Jacobian of the whole batch.
    build_models.wide(root / "whole_tmp", np.random.default_rng(build_models.SEED))
    (root / "whole_tmp" / "wide").rename(root / "whole")
    (root / "whole_tmp").rmdir()
    (root / "whole" / "config.json").write_text('{"batch": false}')
    broken = root / "broken" / "3"
    broken.mkdir(parents=True)
    good = (root / "wide" / "1" / "saved_model.pb").read_bytes()
    (broken / "saved_model.pb").write_bytes(good[: len(good) // 3])  # truncated
    build_models.wide(root / "taken", np.random.default_rng(3))
    (root / "taken" / "wide").rename(root / "policy")  # the built-in model's name
    (root / "taken").rmdir()
    return root


@pytest.fixture(scope="session")
def repo_client(repo: Path) -> Iterator[TestClient]:
    """The app serving `repo` in this process (XLA off)."""
    yield from started_client(Settings(model_repository=str(repo), xla=False), REPOSITORY_READY_S)
