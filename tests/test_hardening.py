"""Load, faults and hostile input against the real server (uvicorn, loopback), each bounded."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests import oracles, servers
from tests.conftest import SEED, started_client
from tests.oracles import assert_close
from tests.servers import LiveServer

ROOT = Path(__file__).parent.parent
MiB = 2**20


def test_schemathesis_all_checks_zero_failures(live_server: LiveServer) -> None:
    st = Path(sys.executable).parent / "st"
    r = subprocess.run(
        [
            str(st),
            "run",
            live_server.url + "/openapi.json",
            "--checks",
            "all",
            "-n",
            "30",
            "--generation-deterministic",
        ],
        cwd=ROOT,  # picks up schemathesis.toml
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-6000:]
    assert "generated" in r.stdout and "passed" in r.stdout


def raw_post(url: str, head: bytes, body_chunks: int, chunk: bytes) -> tuple[int, float]:
    """Send a body of body_chunks × chunk on a raw socket; return (status, seconds until the answer)."""
    host, port = url.removeprefix("http://").split(":")
    t = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head)
        try:
            for _ in range(body_chunks):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and stopped reading: what we want
        answer = s.recv(4096)
    return int(answer[9:12]), time.perf_counter() - t


@pytest.mark.parametrize("chunked", [False, True])
def test_64_mib_bodies_get_413_quickly(live_server: LiveServer, chunked: bool) -> None:
    chunk = b"[" + b"0.5," * 16383 + b"0.5],"  # ~64 KiB of JSON numbers
    n = 64 * MiB // len(chunk) + 1
    if chunked:
        head = (
            b"POST /jacobian HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        status, seconds = raw_post(live_server.url, head, n, framed)
    else:
        head = (
            b"POST /jacobian HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {n * len(chunk)}\r\n\r\n".encode()
        )
        status, seconds = raw_post(live_server.url, head, n, chunk)
    assert status == 413 and seconds < 10
    assert httpx.post(live_server.url + "/jacobian", json=SEED).status_code == 200


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


def test_api_key_when_configured() -> None:
    for client in started_client(Settings(api_key="s3cret-key")):
        assert client.post("/jacobian", json=SEED).status_code == 401
        wrong = client.post("/jacobian", json=SEED, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert "s3cret" not in wrong.text
        assert client.post("/jacobian", json=SEED, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert (
            client.post("/hvp", json={**SEED, "V": SEED["X"]}, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        )
        assert client.post("/hessian", json=SEED, headers={"X-API-Key": "s3cret-ke"}).status_code == 401
        assert client.get("/health/ready").status_code == 200 and client.get("/health/live").status_code == 200


def test_empty_api_key_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JACOBIAN_API_KEY", "")
    assert Settings().api_key is None


def test_error_bodies_leak_no_versions_or_paths(client: TestClient) -> None:
    version = client.get("/health/ready").json()["tensorflow"]
    for r in (
        client.post("/jacobian", content=b"{", headers={"content-type": "application/json"}),
        client.post("/jacobian", json={"X": [[1e308, 1e308]], "Y": [1e308, 1e308], "dtype": "float64"}),
        client.post("/hvp", content=b"PK\x03\x04zz", headers={"content-type": "application/x-npz"}),
    ):
        assert r.status_code in (400, 422)
        assert version not in r.text and "site-packages" not in r.text and "Traceback" not in r.text


def test_soak_3000_mixed_requests_16_clients(live_server: LiveServer) -> None:
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
    errors = asyncio.run(soak(3000))
    seconds = time.perf_counter() - t
    growth = servers.tree_rss_mib(live_server.proc.pid) - before
    print(
        f"\nsoak: 3000 requests, 16 clients, {seconds:.1f} s, {3000 / seconds:.0f} req/s, RSS growth {growth:+.1f} MiB"
    )
    assert errors == []
    assert growth < 64
    # Hot shapes are served by XLA, and its cache stays within JACOBIAN_XLA_MAX_SHAPES.
    assert 0 < httpx.get(live_server.url + "/health/ready").json()["xla_shapes"] <= Settings().xla_max_shapes
