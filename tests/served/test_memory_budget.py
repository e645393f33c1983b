"""The memory budget holds for the served service (engine process and HTTP workers together):
many valid big requests at once wait their turn instead of running it out of memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np

from bench.memory import PeakSampler, service_bytes
from tests.support import oracles
from tests.support.clients import SEED
from tests.support.helpers import NPZ, load_npz, metric, npz_bytes
from tests.support.oracles import assert_close
from tests.support.servers import running

BUDGET = 1536 * 2**20  # 1.5 GiB
CONCURRENT = 12


def test_twelve_big_requests_at_once_stay_within_the_budget(tmp_path: Path, rng: np.random.Generator) -> None:
    A, F = 256, 1024  # each answer: J of 256·256·1024 float64 = 512 MiB
    X, Y = rng.normal(size=(A, F)), rng.normal(size=F) / np.sqrt(F)
    want = oracles.jacobian(X, Y)
    body = npz_bytes(X=X, Y=Y)
    env = {"JACOBIAN_MEMORY_BUDGET_BYTES": str(BUDGET), "JACOBIAN_WORKERS": "2"}
    with running(tmp_path, env) as server:
        assert httpx.get(server.url + "/health/ready").json()["memory_budget_bytes"] == BUDGET
        idle = service_bytes(server.proc.pid)
        statuses: list[int] = []

        async def one(client: httpx.AsyncClient) -> None:
            r = await client.post("/jacobian", content=body, headers={"content-type": NPZ, "accept": NPZ})
            statuses.append(r.status_code)
            if r.status_code == 200:  # checked off the event loop, so the other answers keep arriving
                await asyncio.to_thread(lambda content: assert_close(load_npz(content)["J"], want, 1e-9), r.content)
            else:
                assert r.status_code == 503 and "retry-after" in r.headers, r.text[:300]

        async def burst() -> None:
            limits = httpx.Limits(max_connections=CONCURRENT)
            async with httpx.AsyncClient(base_url=server.url, timeout=300, limits=limits) as client:
                await asyncio.gather(*(one(client) for _ in range(CONCURRENT)))

        with PeakSampler(server.proc.pid) as sampler:
            asyncio.run(burst())
        after = httpx.post(server.url + "/jacobian", json=SEED)
        metrics = httpx.get(server.url + "/metrics").text
    peak_over_idle = sampler.peak - idle
    print(f"idle {idle / 2**20:.0f} MiB, peak over idle {peak_over_idle / 2**20:.0f} MiB, statuses {sorted(statuses)}")
    assert len(statuses) == CONCURRENT and statuses.count(200) >= 1
    assert peak_over_idle < BUDGET * 1.25, f"peak {peak_over_idle / 2**20:.0f} MiB over idle"
    assert after.status_code == 200
    assert_close(np.array(after.json()["J"]), oracles.jacobian(np.array(SEED["X"]), np.array(SEED["Y"])), 1e-5)
    assert metric(metrics, "jacobian_memory_claimed_bytes") == 0  # every claim was given back
