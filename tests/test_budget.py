"""app/service/budget.py: the default budget, the estimate, and admission by bytes (in-process batcher and
the app); the engine-process path under real load is in tests/test_memory_budget.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import ops, system
from app.config import Settings
from app.engine.derivatives import Engine
from app.scheduling.batcher import Batcher
from app.scheduling.ledger import Ledger
from app.service import budget
from tests.support import oracles
from tests.support.clients import started_client
from tests.support.helpers import NPZ, load_npz, metric, npz_bytes
from tests.support.oracles import assert_close

GiB = 1 << 30


def _fake_system(tmp: Path, own: str, files: dict[str, str], mem_kib: int = 16 * 2**20) -> tuple[str, str]:
    root = tmp / "cgroup"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    meminfo = tmp / "meminfo"
    meminfo.write_text(f"MemTotal:       {mem_kib} kB\nMemFree:        1 kB\n")
    return str(root), str(meminfo)


@pytest.mark.parametrize(
    "files,want",
    [
        ({"memory.max": "8589934592\n"}, 4 * GiB),  # cgroup v2 limit: half of it
        ({"memory.max": "max\n"}, 4 * GiB),  # v2, no limit: a quarter of 16 GiB
        ({"memory/memory.limit_in_bytes": "2147483648\n"}, 1 * GiB),  # v1 limit
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 4 * GiB),  # v1 "unlimited"
        ({}, 4 * GiB),  # no cgroup files at all
    ],
)
def test_default_budget_is_half_the_container_limit_else_a_quarter_of_memory(tmp_path: Path, files, want) -> None:
    root, meminfo = _fake_system(tmp_path, "/", files)
    assert system.default_budget(root, meminfo) == want


@pytest.mark.parametrize(
    "files,want",
    [
        ({"cpu.max": "200000 100000\n"}, 2),  # cgroup v2: 2 CPUs
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs round up
        ({"cpu.max": "max 100000\n"}, None),  # no limit
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1 unlimited
        ({}, None),
    ],
)
def test_the_cgroup_cpu_quota_in_whole_cpus(tmp_path: Path, files: dict[str, str], want: int | None) -> None:
    root, _ = _fake_system(tmp_path, "/", files)
    assert system.cgroup_cpus(root) == want


def test_an_empty_budget_setting_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JACOBIAN_MEMORY_BUDGET_BYTES", "")
    assert Settings().memory_budget_bytes == system.default_budget()


def test_the_settings_default_reads_this_machine() -> None:
    limit = system.cgroup_limit()
    want = limit // 2 if limit is not None else system.physical_memory() // 4
    assert Settings().memory_budget_bytes == want


def test_estimate_grows_with_the_problem_and_json_costs_more_than_npz() -> None:
    for op in (ops.JACOBIAN, ops.HESSIAN, ops.HVP):
        small = budget.estimate(op, 1, 8, 32, 8, npz=True)
        assert small < budget.estimate(op, 1, 16, 64, 8, npz=True) < budget.estimate(op, 4, 16, 64, 8, npz=True)
        assert budget.estimate(op, 1, 16, 64, 8, npz=True) < budget.estimate(op, 1, 16, 64, 8, npz=False)
    # At least the answer itself and TensorFlow's copy of it: 256×1024 float64 J is 512 MiB.
    assert budget.estimate(ops.JACOBIAN, 1, 256, 1024, 8, npz=True) > 2 * 512 * 2**20


def test_ledger_admits_anything_when_empty_and_otherwise_only_what_fits() -> None:
    ledger = Ledger(100)
    assert ledger.fits(500)  # alone, even an over-budget claim runs: nothing else can free memory
    ledger.claim(60)
    assert ledger.fits(40) and not ledger.fits(41)
    ledger.release(60)
    assert ledger.claimed == 0 and ledger.fits(100)


@pytest.fixture(scope="module")
def plain_engine() -> Engine:
    """An engine of this module's own, without XLA (the session's `engine` serves the app)."""
    return Engine(xla=False)


def test_requests_whose_claims_do_not_fit_together_run_one_after_the_other(
    plain_engine: Engine, rng: np.random.Generator
) -> None:
    calls: list[tuple[int, int]] = []  # (rows, bytes claimed while running)

    async def scenario() -> None:
        batcher: Batcher

        def run_rows(op: str, *rows: np.ndarray, model: str):
            calls.append((len(rows[0]), batcher.ledger.claimed))
            return plain_engine.run_rows(op, *rows, model=model)

        batcher = Batcher(run_rows, max_batch_rows=64, max_pending=64, memory_budget=100)
        batcher.start()
        X, Y = rng.normal(size=(1, 3, 4)), rng.normal(size=(1, 4))
        jobs = [asyncio.ensure_future(batcher.submit(ops.JACOBIAN, X, Y, claim=60)) for _ in range(3)]
        for job in jobs:
            done = await job
            assert_close(done.arrays["J"][0], oracles.jacobian(X[0], Y[0]), 1e-9)
            assert batcher.ledger.claimed == 60  # held until released, so the next waits
            done.release()
        assert batcher.ledger.claimed == 0
        await batcher.stop()

    asyncio.run(scenario())
    # Small same-shape requests would share one call; their claims kept them apart.
    assert calls == [(1, 60), (1, 60), (1, 60)]


def test_a_cancelled_request_gives_back_its_claim(plain_engine: Engine, rng: np.random.Generator) -> None:
    async def scenario() -> None:
        batcher = Batcher(plain_engine.run_rows, max_batch_rows=64, max_pending=64, memory_budget=100)
        batcher.start()
        X, Y = rng.normal(size=(1, 3, 4)), rng.normal(size=(1, 4))
        first = await batcher.submit(ops.JACOBIAN, X, Y, claim=60)
        waiting = asyncio.ensure_future(batcher.submit(ops.JACOBIAN, X, Y, claim=60))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # no room beside the first
        waiting.cancel()
        first.release()
        await asyncio.sleep(0.05)
        assert batcher.ledger.claimed == 0
        await batcher.stop()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def tight() -> TestClient:
    # 64 MiB: a 64×512 float64 Jacobian fits (about 53 MiB), a 128×1024 one (about 350 MiB) never can.
    yield from started_client(Settings(memory_budget_bytes=64 * 2**20, xla=False))


def test_a_request_over_the_whole_budget_is_413_before_any_compute(tight: TestClient, rng: np.random.Generator) -> None:
    batcher = tight.app.state.runtime.service.batcher  # type: ignore[attr-defined]
    before = metric(tight.get("/metrics").text, "jacobian_batch_rows_count")
    X, Y = rng.normal(size=(128, 1024)), rng.normal(size=1024) / 32
    r = tight.post("/jacobian", content=npz_bytes(X=X, Y=Y), headers={"content-type": NPZ, "accept": NPZ})
    assert r.status_code == 413
    body = r.json()
    assert body["code"] == "over_memory_budget"
    assert "JACOBIAN_MEMORY_BUDGET_BYTES" in body["message"] and "67,108,864" in body["message"]
    assert metric(tight.get("/metrics").text, "jacobian_batch_rows_count") == before
    assert batcher.ledger.claimed == 0
    assert metric(tight.get("/metrics").text, "jacobian_rejected_requests_total", reason="over_memory_budget") >= 1


def test_a_request_within_the_budget_is_served_and_its_claim_returned(
    tight: TestClient, rng: np.random.Generator
) -> None:
    X, Y = rng.normal(size=(64, 512)), rng.normal(size=512) / 16
    r = tight.post("/jacobian", content=npz_bytes(X=X, Y=Y), headers={"content-type": NPZ, "accept": NPZ})
    assert r.status_code == 200
    assert_close(load_npz(r.content)["J"], oracles.jacobian(X, Y), 1e-9)
    assert tight.app.state.runtime.service.batcher.ledger.claimed == 0  # type: ignore[attr-defined]
    ready = tight.get("/health/ready").json()
    assert ready["memory_budget_bytes"] == 64 * 2**20 and ready["memory_claimed_bytes"] == 0
    assert metric(tight.get("/metrics").text, "jacobian_memory_budget_bytes") == 64 * 2**20
