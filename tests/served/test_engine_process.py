"""app/serve/engine_process.py's admission: past JACOBIAN_MAX_PENDING requests the engine answers
"overloaded", which the client gets as 503 with Retry-After, and the service recovers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np

from tests.support import servers
from tests.support.clients import SEED


def test_overload_gives_503_with_retry_after_then_recovers(tmp_path: Path) -> None:
    with servers.running(tmp_path, {"JACOBIAN_MAX_PENDING": "2", "JACOBIAN_MAX_BATCH_ROWS": "1"}) as server:
        X = np.random.default_rng(0).normal(size=(48, 256)).tolist()
        body = {"X": X, "Y": [0.01] * 256}

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as c:
                return await asyncio.gather(
                    *(
                        c.post(server.url + "/jacobian", json=body, headers={"accept": "application/x-npz"})
                        for _ in range(24)
                    )
                )

        answers = asyncio.run(burst())
        statuses = [r.status_code for r in answers]
        assert 503 in statuses and 200 in statuses and set(statuses) <= {200, 503}
        for r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"].isdigit() and r.json()["code"] == "overloaded"
        assert httpx.post(server.url + "/jacobian", json=SEED).status_code == 200
