"""The zoo's small models (examples/zoo.py): a functional model with BatchNormalization and
Dropout, an Embedding with an int input beside a float one, a `tf.Module` capturing float and int
constants through Cholesky, a triangular solve, log-det, rfft, gather and where, a TensorFlow
Probability density, and an output through logm. Every operation, Hessians included, against a
local tape on the loaded SavedModel (tests/zoo/checks.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from examples import zoo
from tests.zoo import checks

# A local tape cannot differentiate no_gradient's signature at all (its call's gradient needs
# logm's); the service serves its other output: closed forms check it.
TAPED = ["bn_dropout", "embedding", "linalg", "density"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zoo")
    zoo.build(path, images=False)
    return path


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    yield from checks.serve(root)


@pytest.mark.parametrize("name", TAPED)
def test_predict_and_the_jacobian_equal_a_local_tape(client: TestClient, root: Path, name: str) -> None:
    checks.predict_and_jacobian(client, root, name)


@pytest.mark.parametrize("name", TAPED)
def test_the_vjp_and_the_summed_gradient_in_the_variables_equal_a_local_tape(
    client: TestClient, root: Path, name: str
) -> None:
    checks.vjp_and_policy_gradient(client, root, name)


@pytest.mark.parametrize("name", TAPED)
def test_the_jvp_and_the_hvp_equal_a_local_tape(client: TestClient, root: Path, name: str) -> None:
    checks.jvp_and_hvp(client, root, name)


@pytest.mark.parametrize("name", TAPED)
def test_the_hessian_equals_nested_local_tapes(client: TestClient, root: Path, name: str) -> None:
    checks.hessian(client, root, name)


def test_an_output_through_an_op_without_a_gradient_leaves_the_other_served(client: TestClient, root: Path) -> None:
    checks.no_gradient_output(client, root)
