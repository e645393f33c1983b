"""The zoo's image models (examples/zoo.py): MobileNetV2 and ResNet50 from `keras.applications`
(32×32×3, random weights), each exported by Keras 3's `model.export` and by
`tf.saved_model.save(model, ...)`. Predict, the Jacobian, the VJP and the gradient in every
variable against a local tape for both ways; the JVP and the HVP for the exported ones (the
other way's graph goes through the same kernels, and these two cost the most here: 40 s a
model); one example's Hessian refused by the limits (tests/zoo/checks.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from examples import zoo
from tests.zoo import checks


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zoo")
    zoo.mobilenet(path)
    zoo.resnet(path)
    return path


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    yield from checks.serve(root)


@pytest.mark.parametrize("name", checks.IMAGES)
def test_predict_and_the_jacobian_equal_a_local_tape(client: TestClient, root: Path, name: str) -> None:
    checks.predict_and_jacobian(client, root, name)


@pytest.mark.parametrize("name", checks.IMAGES)
def test_the_vjp_and_the_summed_gradient_in_the_variables_equal_a_local_tape(
    client: TestClient, root: Path, name: str
) -> None:
    checks.vjp_and_policy_gradient(client, root, name)


@pytest.mark.parametrize("name", ["mobilenet_export", "resnet_export"])
def test_the_jvp_and_the_hvp_equal_a_local_tape(client: TestClient, root: Path, name: str) -> None:
    checks.jvp_and_hvp(client, root, name)


def test_one_examples_hessian_of_an_image_is_refused_by_the_limits(client: TestClient, root: Path) -> None:
    checks.image_hessian_refused(client, root)
