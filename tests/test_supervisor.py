"""`python -m app` as a whole: a supervisor, HTTP workers without TensorFlow, and an engine process
that may die under load without taking the service down."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import oracles, servers
from tests.conftest import SEED
from tests.servers import LiveServer


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_until(condition, what: str, timeout_s: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def ready(server: LiveServer) -> bool:
    try:
        return httpx.get(server.url + "/health/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with servers.running(tmp_path_factory.mktemp("supervised"), {"JACOBIAN_WORKERS": "2"}) as server:
        yield server


def test_workers_never_load_tensorflow_and_the_engine_does(two_workers: LiveServer) -> None:
    workers, engines = servers.worker_pids(two_workers), servers.engine_pids(two_workers)
    assert len(workers) == 2 and len(engines) == 1
    assert httpx.get(two_workers.url + "/health/ready").json()["engine_pids"] == engines
    for pid in workers:
        assert "tensorflow" not in Path(f"/proc/{pid}/maps").read_text(), f"worker {pid} mapped TensorFlow"
    assert "libtensorflow" in Path(f"/proc/{engines[0]}/maps").read_text()
    rss = {pid: servers.rss_mib(pid) for pid in [two_workers.proc.pid, *workers, *engines]}
    print(
        f"\nidle RSS (MiB): supervisor {rss[two_workers.proc.pid]:.0f}, workers "
        f"{', '.join(f'{rss[p]:.0f}' for p in workers)}, engine {rss[engines[0]]:.0f}; "
        f"whole service {servers.tree_rss_mib(two_workers.proc.pid):.0f}"
    )


def test_batches_hold_requests_from_both_workers(two_workers: LiveServer) -> None:
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(16, 64)), rng.normal(size=64) / 8
    body = {"X": X.tolist(), "Y": y.tolist(), "dtype": "float64"}

    def mixed() -> float:
        text = httpx.get(two_workers.url + "/metrics").text
        return metric(text, "jacobian_batch_workers_count") - metric(text, 'jacobian_batch_workers_bucket{le="1.0"}')

    async def burst() -> None:
        # Separate connections: the kernel spreads them over both workers' accept queues.
        clients = [httpx.AsyncClient(base_url=two_workers.url, timeout=60) for _ in range(16)]
        try:
            answers = await asyncio.gather(*(c.post("/jacobian", json=body) for c in clients for _ in range(4)))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
        for r in answers:
            assert r.status_code == 200
        oracles.assert_close(np.array(answers[-1].json()["J"]), oracles.jacobian(X, y), 1e-9)

    before = mixed()
    for _ in range(20):
        asyncio.run(burst())
        if mixed() > before:
            return
    pytest.fail("no engine call held requests from both workers")


def test_a_killed_worker_is_replaced(two_workers: LiveServer) -> None:
    victim = servers.worker_pids(two_workers)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(servers.worker_pids(two_workers)) == 2 and victim not in servers.worker_pids(two_workers),
        "the supervisor starts a new worker",
    )
    for _ in range(8):  # every connection lands on a live worker
        with httpx.Client(base_url=two_workers.url, timeout=60) as c:
            assert c.post("/jacobian", json=SEED).status_code == 200


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSEGV])
def test_engine_killed_under_load_gives_only_right_answers_or_503_then_recovers(
    two_workers: LiveServer, how: signal.Signals
) -> None:
    engine = servers.engine_pids(two_workers)[0]
    restarts = metric(httpx.get(two_workers.url + "/metrics").text, "jacobian_engine_restarts_total")
    rng = np.random.default_rng(int(how))
    X, y = rng.normal(size=(32, 64)), rng.normal(size=64) / 8
    body = {"X": X.tolist(), "Y": y.tolist(), "dtype": "float64"}
    want = oracles.jacobian(X, y)
    statuses: Counter[int] = Counter()

    async def load() -> None:
        async with httpx.AsyncClient(
            base_url=two_workers.url, timeout=60, limits=httpx.Limits(max_connections=16)
        ) as c:
            killed = asyncio.Event()

            async def client() -> None:
                while not killed.is_set() or statuses[503] == 0 or sum(statuses.values()) < 400:
                    if sum(statuses.values()) > 5000:
                        return
                    r = await c.post("/jacobian", json=body)  # a reset connection raises here
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        oracles.assert_close(np.array(r.json()["J"]), want, 1e-9)
                    else:
                        assert r.status_code == 503 and r.headers["retry-after"].isdigit(), r.text
                        assert r.json()["code"] in ("engine_unavailable", "overloaded")

            async def killer() -> None:
                while statuses[200] < 50:
                    await asyncio.sleep(0.01)
                os.kill(engine, how)
                killed.set()

            await asyncio.gather(*(client() for _ in range(16)), killer())

    asyncio.run(load())
    assert statuses[200] >= 50 and statuses[503] > 0 and set(statuses) <= {200, 503}, statuses
    t = time.monotonic()
    wait_until(lambda: ready(two_workers), "the engine is back", timeout_s=60)
    print(f"\n{how.name}: {dict(statuses)}; ready again {time.monotonic() - t:.1f} s after the load ended")
    health = httpx.get(two_workers.url + "/health/ready").json()
    assert health["engine_pids"] and engine not in health["engine_pids"]
    r = httpx.post(two_workers.url + "/jacobian", json=body, timeout=60)
    assert r.status_code == 200
    oracles.assert_close(np.array(r.json()["J"]), want, 1e-9)
    text = httpx.get(two_workers.url + "/metrics").text
    assert metric(text, "jacobian_engine_restarts_total") == restarts + 1
    assert metric(text, "jacobian_ipc_seconds_count") > 0


def test_while_the_engine_is_down_ready_says_why_and_live_stays_up(two_workers: LiveServer) -> None:
    engine = servers.engine_pids(two_workers)[0]
    os.kill(engine, signal.SIGSTOP)  # held, so "down" lasts as long as the test needs
    try:
        os.kill(engine, signal.SIGKILL)
        wait_until(lambda: httpx.get(two_workers.url + "/health/ready").status_code == 503, "readiness drops")
        body = httpx.get(two_workers.url + "/health/ready").json()
        assert body["status"] == "starting" and "engine 0 is" in body["reason"]
        assert httpx.get(two_workers.url + "/health/live").status_code == 200
        r = httpx.post(two_workers.url + "/jacobian", json=SEED)
        assert r.status_code in (200, 503)  # 200 once the replacement is up
    finally:
        wait_until(lambda: ready(two_workers), "the engine is back", timeout_s=60)
