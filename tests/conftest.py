from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from tests.support import servers
from tests.support.clients import started_client

# New examples every run (a failure prints the seed to reproduce it); `HYPOTHESIS_PROFILE=deep`
# for a longer search.
hypothesis_settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True)
hypothesis_settings.register_profile("deep", max_examples=1500, deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


SCOPES = ("unit", "app", "served", "canary", "zoo", "artifacts")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its folder's scope, so `-m unit` and `-m "not artifacts"` select."""
    for item in items:
        scope = next((s for s in SCOPES if f"tests/{s}/" in item.path.as_posix()), None)
        if scope is not None:
            item.add_marker(scope)


# The modules that share a session server, each group run by one pytest-xdist worker (which starts
# the server once); every other module runs whole on one worker, so its module fixtures start once.
SHARED_SERVERS = {
    "repository_app": [
        "tests/app/test_model_operations.py",
        "tests/app/test_model_catalog.py",
        "tests/app/test_model_variables.py",
        "tests/app/test_mixed_second_order.py",
    ],
    "repository_server": [
        "tests/served/test_client_jax.py",
        "tests/served/test_client_tensorflow.py",
        "tests/served/test_model_catalog.py",
        "tests/served/test_umbridge.py",
        "tests/served/test_umbridge_pymc.py",
    ],
}
_GROUP = {path: group for group, paths in SHARED_SERVERS.items() for path in paths}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`pytest -n 2`: work handed out a module (or a group of `SHARED_SERVERS`) at a time. (xdist's
    own `--dist loadgroup` does not group under pytest 9, whose node ids it can no longer suffix.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByModuleAndServer(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return _GROUP.get(path, path)

    return ByModuleAndServer(config, log)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261126)


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A shared-memory directory of the test's own."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="jt-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    """The real ASGI app with default settings, warmed up once for the whole run."""
    yield from started_client()


@pytest.fixture(scope="session")
def engine(client: TestClient):
    return client.app.state.runtime.engine  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def _session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.LiveServer]:
    with servers.running(tmp_path_factory.mktemp("live")) as server:
        yield server


@pytest.fixture(scope="session")
def repository_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[servers.LiveServer, Path]]:
    """A server of the example model repository, a model with a 0-d variable and a broken model
    (two HTTP workers, which list
    the engine's cards), shared by the tests that need one: the server and the repository's
    folder. Its modules are one group of `SHARED_SERVERS`, so one worker of the run starts it."""
    from examples import build_models
    from tests.support import edge_models

    root = tmp_path_factory.mktemp("repo")
    build_models.build(root)
    edge_models.save_scalar_variable(root)
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "saved_model.pb").write_bytes(b"truncated")
    env = {"JACOBIAN_MODEL_REPOSITORY": str(root), "JACOBIAN_WORKERS": "2"}
    with servers.running(tmp_path_factory.mktemp("repository"), env) as server:
        yield server, root


@pytest.fixture(scope="session")
def repository_client(repository_server: tuple[servers.LiveServer, Path]) -> Iterator[tuple[Any, Path]]:
    """A `jacobian_client.Client` of the repository server, and the repository's folder."""
    from jacobian_client import Client

    server, root = repository_server
    with Client(server.url) as client:
        yield client, root


@pytest.fixture
def live_server(_session_server: servers.LiveServer) -> Iterator[servers.LiveServer]:
    """The shared server process; a test after which it is no longer running fails, with its log."""
    _session_server.assert_alive()
    yield _session_server
    _session_server.assert_alive()
