"""`python -m app` as a whole: a supervisor, HTTP workers without TensorFlow, and an engine process
that may die under load without taking the service down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from app.config import Settings
from tests.support import oracles, servers
from tests.support.clients import SEED
from tests.support.helpers import metric, wait_until
from tests.support.oracles import assert_close
from tests.support.servers import LiveServer


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
        return metric(text, "jacobian_batch_workers_count") - metric(text, "jacobian_batch_workers_bucket", le="1.0")

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
    new = servers.engine_pids(two_workers)
    assert len(new) == 1 and new[0] != engine
    # Each worker learns of the new engine on its own (within a quarter second).
    wait_until(
        lambda: all(httpx.get(two_workers.url + "/health/ready").json()["engine_pids"] == new for _ in range(4)),
        "every worker reports the new engine",
    )
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


def compute_count(server: LiveServer, op: str) -> float:
    return metric(httpx.get(server.url + "/metrics").text, "jacobian_compute_seconds_count", op=op)


def posts_in_progress(server: LiveServer) -> float:
    return metric(httpx.get(server.url + "/metrics").text, "jacobian_requests_in_progress", method="POST")


@contextlib.contextmanager
def engine_held(server: LiveServer) -> Iterator[None]:
    """The engine process stopped (SIGSTOP): "busy" for exactly as long as the test needs."""
    engine = servers.engine_pids(server)[0]
    os.kill(engine, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(engine, signal.SIGCONT)


def test_hang_ups_while_the_engine_is_busy_are_never_computed(two_workers: LiveServer) -> None:
    X, y = [[0.5, -1.0, 2.0], [1.0, 0.5, 0.0], [-1.0, 2.0, 1.0]], [1.0, 0.0, -1.0]
    body = orjson.dumps({"X": X, "Y": y, "V": X})  # /jvp: nothing else here uses it
    before = compute_count(two_workers, "policy.jvp")
    with engine_held(two_workers):
        queued = [servers.raw_post(two_workers.url, "/jvp", body) for _ in range(5)]
        wait_until(lambda: posts_in_progress(two_workers) == 5, "five requests wait for the engine")
        for s in queued:
            s.close()
        wait_until(lambda: posts_in_progress(two_workers) == 0, "the workers see the hang-ups")
    r = httpx.post(two_workers.url + "/jvp", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200  # answered after everything the engine had queued
    Xa = np.array(X)
    oracles.assert_close(np.array(r.json()["JV"]), oracles.jvp(Xa, np.array(y), Xa), 1e-5)
    assert compute_count(two_workers, "policy.jvp") == before + 1


def test_requests_past_their_deadline_get_504_and_are_never_computed(tmp_path: Path) -> None:
    with servers.running(tmp_path, {"JACOBIAN_DEADLINE_S": "1", "JACOBIAN_WORKERS": "1"}) as server:
        body = {"X": [[0.5, -1.0], [2.0, 1.0]], "Y": [1.0, 3.0], "V": [[1.0, 0.0], [0.0, 1.0]]}
        # The operation's first use traces and calibrates it, which may take longer than the
        # deadline (the engine finishes it anyway): done before the test.
        wait_until(lambda: httpx.post(server.url + "/jvp", json=body, timeout=60).status_code == 200, "a warm /jvp")
        before = compute_count(server, "policy.jvp")
        with engine_held(server):
            late = httpx.post(server.url + "/jvp", json=body, timeout=60)
        assert late.status_code == 504 and late.json()["code"] == "deadline_exceeded"
        assert httpx.post(server.url + "/jvp", json=body, timeout=60).status_code == 200
        assert compute_count(server, "policy.jvp") == before + 1


@pytest.mark.parametrize(
    "devices,visible,want",
    [("0,1", None, ["0", "1"]), (None, "2", ["2"]), (None, "", [None]), ("", "0,3", ["0", "3"])],
)
def test_one_engine_per_device(monkeypatch: pytest.MonkeyPatch, devices, visible, want) -> None:  # type: ignore[no-untyped-def]
    from app.config import Settings
    from app.serve.supervisor import engine_devices

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert engine_devices(Settings(devices=devices)) == want


def test_a_supervisor_killed_outright_leaves_nothing_after_the_next_start(tmp_path: Path) -> None:
    server = servers.start(tmp_path, {"JACOBIAN_WORKERS": "1"})
    X = np.random.default_rng(2).normal(size=(64, 128))
    r = httpx.post(server.url + "/jacobian", json={"X": X.tolist(), "Y": [0.01] * 128}, timeout=60)
    assert r.status_code == 200  # a 2 MB answer: through a shared-memory segment the worker keeps
    pid, processes = server.proc.pid, servers.tree(server.proc.pid)
    assert list(Path("/dev/shm").glob(f"jacobian-{pid}-*"))
    os.kill(pid, signal.SIGKILL)  # no finally, no sweep
    server.proc.wait()
    wait_until(lambda: not [p for p in processes if servers.cmdline(p)], "its children die with it", 30)
    assert list(Path("/dev/shm").glob(f"jacobian-{pid}-*"))  # what the next start must clean up
    with servers.running(tmp_path, {"JACOBIAN_WORKERS": "1"}):
        assert list(Path("/dev/shm").glob(f"jacobian-{pid}-*")) == []
        assert list(Path(tempfile.gettempdir()).glob(f"jacobian-{pid}-*")) == []


def test_soak_2000_mixed_requests_16_clients(live_server: LiveServer) -> None:
    rng = np.random.default_rng(3)
    cases = []
    for i in range(64):
        A, F = int(rng.integers(1, 10)), int(rng.integers(1, 16))
        B = int(rng.integers(0, 4))
        X, Y = rng.normal(size=(A, F)), rng.normal(size=(B, F) if B else F) / np.sqrt(F)
        cases.append((("/jacobian", "/hessian", "/hvp")[i % 3], X, Y, rng.normal(size=(A, F)), B))

    async def soak(n: int) -> list[str]:
        errors: list[str] = []
        async with httpx.AsyncClient(
            base_url=live_server.url, timeout=60, limits=httpx.Limits(max_connections=16)
        ) as c:

            async def client(k: int) -> None:
                for i in range(k, n, 16):
                    path, X, Y, V, B = cases[i % len(cases)]
                    body = {"X": X.tolist(), "Y": Y.tolist(), "dtype": "float64"}
                    if path == "/hvp":
                        body["V"] = V.tolist()
                    r = await c.post(path, json=body)
                    if r.status_code != 200:
                        errors.append(f"{path} {r.status_code} {r.text[:200]}")
                        continue
                    name = {"/jacobian": "J", "/hessian": "H", "/hvp": "HV"}[path]
                    got = np.asarray(r.json()[name])
                    for b, y in enumerate(Y if B else Y[None]):  # every state of a batch
                        H = oracles.hessian(X, y)
                        want = {"J": oracles.jacobian(X, y), "H": H, "HV": np.einsum("ijklm,lm->ijk", H, V)}[name]
                        assert_close(got[b] if B else got, want, 1e-9)

            await asyncio.gather(*(client(k) for k in range(16)))
        return errors

    assert asyncio.run(soak(300)) == []  # warm: allocator pools, connections
    before = servers.tree_rss_mib(live_server.proc.pid)  # every process: supervisor, workers, engine
    t = time.perf_counter()
    errors = asyncio.run(soak(2000))
    seconds = time.perf_counter() - t
    growth = servers.tree_rss_mib(live_server.proc.pid) - before
    print(
        f"\nsoak: 2000 requests, 16 clients, {seconds:.1f} s, {2000 / seconds:.0f} req/s, RSS growth {growth:+.1f} MiB"
    )
    assert errors == []
    assert growth < 64
    # Hot shapes are served by XLA, and its cache stays within JACOBIAN_XLA_MAX_SHAPES.
    assert 0 < httpx.get(live_server.url + "/health/ready").json()["xla_shapes"] <= Settings().xla_max_shapes
