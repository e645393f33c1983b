"""Weights pushed under `python -m app` with two HTTP workers and two engine processes: a push
reaches every engine before it is answered, 16 connections calling predict while 20 pushes
happen get only 200s, each equal to exactly the version it names, and a version pinned through
the engine process that is no longer kept is a 404 naming the kept ones. Engines killed outright
come back with the versions pushed before (app/serve/pushes.py)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from examples import build_models
from tests.support import servers
from tests.support.helpers import wait_until
from tests.support.model_oracles import Oracle, variables


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, servers.LiveServer]]:
    root = tmp_path_factory.mktemp("versions")
    build_models.mlp(root, np.random.default_rng(build_models.SEED))
    # Two engine processes on this CPU-only machine: one per "device", which the CPU build ignores.
    env = {
        "JACOBIAN_MODEL_REPOSITORY": str(root),
        "JACOBIAN_WORKERS": "2",
        "JACOBIAN_DEVICES": "0,1",
        "JACOBIAN_XLA": "false",
    }
    with servers.running(tmp_path_factory.mktemp("server"), env) as server:
        assert len(servers.engine_pids(server)) == 2
        yield server.url, root, server


def push(http: httpx.Client, values: dict[str, np.ndarray]) -> int:
    r = http.put("/models/mlp/variables", json={"variables": {k: v.tolist() for k, v in values.items()}})
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def predict(http: httpx.Client, x: np.ndarray, version: int | None = None) -> httpx.Response:
    path = f"/models/mlp/versions/{version}/predict" if version else "/models/mlp/predict"
    return http.post(path, json={"inputs": {"x": x.tolist()}})


def close(a: Any, b: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())))


def test_pushes_under_load_through_two_engines(served: tuple[str, Path, servers.LiveServer]) -> None:
    url, root, _ = served
    stored = variables(root / "mlp" / "1")
    oracle = Oracle("mlp", root / "mlp" / "1")
    x = np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)
    thetas = {1: {k: v.astype(np.float32) for k, v in stored.items()}}
    done = threading.Event()
    answers: list[tuple[int, Any]] = []

    def pusher() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for k in range(20):
                theta = {n: (v * (1.0 + 0.05 * (k + 1))).astype(np.float32) for n, v in stored.items()}
                thetas[push(http, theta)] = theta
        done.set()

    def caller() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not done.is_set():
                r = predict(http, x)
                answers.append((r.status_code, r.json()))

    with ThreadPoolExecutor(17) as pool:
        jobs = [pool.submit(pusher)] + [pool.submit(caller) for _ in range(16)]
        for job in jobs:
            job.result()
    assert [s for s, _ in answers if s != 200] == []
    assert sorted(thetas) == list(range(1, 22))
    assert len({body["version"] for _, body in answers}) > 2
    for _, body in answers:
        close(body["outputs"]["y"], oracle.at(thetas[body["version"]]).outputs({"x": x})["y"])
    # Every engine made every version: concurrent requests, spread over both engines, all answer
    # the newest; the one before is kept, older ones are not.
    with httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(8) as pool:
        latest = list(pool.map(lambda _: predict(http, x).json(), range(32)))
        assert {body["version"] for body in latest} == {21}
        for body in latest:
            close(body["outputs"]["y"], oracle.at(thetas[21]).outputs({"x": x})["y"])
        pinned = list(pool.map(lambda _: predict(http, x, 20).json(), range(16)))
        for body in pinned:
            assert body["version"] == 20
            close(body["outputs"]["y"], oracle.at(thetas[20]).outputs({"x": x})["y"])
        gone = predict(http, x, 19)
        assert gone.status_code == 404 and "its versions are 20, 21" in gone.json()["message"], gone.text
    # Each worker's cards: at once on the one that pushed, at its next status (1 s) on the other.
    time.sleep(1.5)
    for _ in range(6):
        card = httpx.get(url + "/models/mlp", timeout=30).json()
        assert card["version"] == 21 and [v["version"] for v in card["versions"]] == [20, 21]


def test_pushed_versions_outlive_engines_killed_outright(served: tuple[str, Path, servers.LiveServer]) -> None:
    url, root, server = served
    stored = variables(root / "mlp" / "1")
    oracle = Oracle("mlp", root / "mlp" / "1")
    x = np.random.default_rng(1).normal(size=(3, 64)).astype(np.float32)
    thetas = [{n: (v * scale).astype(np.float32) for n, v in stored.items()} for scale in (0.5, 0.7, 0.9)]
    with httpx.Client(base_url=url, timeout=60) as http:
        numbers = [push(http, theta) for theta in thetas]
        kept = [v["version"] for v in http.get("/models/mlp").json()["versions"]]
        assert kept == numbers[-2:]  # JACOBIAN_MAX_VERSIONS=2: the first of the three retired
        before = servers.engine_pids(server)
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: not set(servers.engine_pids(server)) & set(before) and len(servers.engine_pids(server)) == 2,
            "both engines restarted",
        )
        wait_until(lambda: httpx.get(url + "/health/ready").status_code == 200, "the service is ready", 120)
        # Every answer, from either engine, is the newest pushed version's, and the one before is kept.
        for _ in range(8):
            body = predict(http, x).json()
            assert body["version"] == numbers[-1], body
            close(body["outputs"]["y"], oracle.at(thetas[-1]).outputs({"x": x})["y"])
        body = predict(http, x, numbers[-2]).json()
        close(body["outputs"]["y"], oracle.at(thetas[-2]).outputs({"x": x})["y"])
        gone = predict(http, x, numbers[0])
        assert gone.status_code == 404 and f"its versions are {numbers[-2]}, {numbers[-1]}" in gone.text, gone.text
        r = http.get("/models/mlp/variables")
        assert r.status_code == 200 and r.json()["version"] == numbers[-1]
        for name, value in r.json()["variables"].items():
            close(value, thetas[-1][name])
