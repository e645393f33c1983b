"""What happens to a request between arriving and being answered, over real sockets and with
no timing guesses: the engine is held busy by a gate until the test opens it, so "queued" and
"in flight" are states the test waits for, not durations it hopes for."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import httpx
import numpy as np
import pytest
import uvicorn

from app.config import Settings
from app.engine.derivatives import Engine
from app.http.app import create_app
from app.service import codec, npz
from tests.support import oracles, servers
from tests.support.clients import SEED
from tests.support.helpers import NPZ, load_npz, wait_until
from tests.support.oracles import assert_close


class Gate:
    """Wraps the engine's calls (`Engine.run`, patched): each records its rows' shape, then
    waits until the gate opens."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.entered = threading.Event()
        self.open = threading.Event()

    def wrap(self, run: Callable) -> Callable:
        def gated(engine: Engine, call: Any, *rows: np.ndarray, **kw: Any):
            self.calls.append(rows[0].shape)
            self.entered.set()
            assert self.open.wait(60), "the test never opened the gate"
            return run(engine, call, *rows, **kw)

        return gated


@contextlib.contextmanager
def serving(settings: Settings, gate: Gate) -> Iterator[tuple[str, object]]:
    """The real app under uvicorn on a loopback port, in a thread of this process."""
    with mock.patch.object(Engine, "run", gate.wrap(Engine.run)):
        yield from _serving(settings, gate)


def _serving(settings: Settings, gate: Gate) -> Iterator[tuple[str, object]]:
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=servers.free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        wait_until(lambda: app.state.runtime.status == "ready" and server.started, "the server is ready")
        yield url, app
    finally:
        gate.open.set()
        server.should_exit = True
        thread.join(30)


def json_body(X: np.ndarray, y: np.ndarray) -> bytes:
    return codec.encode_json({"X": X, "Y": y}, {"dtype": "float64"})


def pending(app) -> int:
    return app.state.runtime.service.batcher.pending  # type: ignore[attr-defined, no-any-return]


def test_clients_that_hang_up_while_queued_are_never_computed(rng: np.random.Generator) -> None:
    gate = Gate()
    with serving(Settings(xla=False), gate) as (url, app), httpx.Client(timeout=60) as client:
        first = threading.Thread(target=lambda: client.post(url + "/jacobian", json=SEED))
        first.start()
        assert gate.entered.wait(60)
        X, y = rng.normal(size=(3, 5)), rng.normal(size=5)
        queued = [servers.raw_post(url, "/jacobian", json_body(X, y)) for _ in range(5)]
        wait_until(lambda: pending(app) == 6, "five requests queue behind the busy engine")
        for s in queued:
            s.close()
        wait_until(lambda: pending(app) == 1, "the server sees the five hang-ups")
        gate.open.set()
        first.join(60)
        after = client.post(url + "/jacobian", json={"X": X.tolist(), "Y": y.tolist(), "dtype": "float64"})
        assert after.status_code == 200
        assert_close(np.array(after.json()["J"]), oracles.jacobian(X, y), 1e-9)
    assert gate.calls == [(1, 2, 4), (1, 3, 5)]  # the seed, then `after`: none of the five


def test_requests_past_their_deadline_get_504_and_are_never_computed(rng: np.random.Generator) -> None:
    gate = Gate()
    with serving(Settings(xla=False, deadline_s=0.5), gate) as (url, app), httpx.Client(timeout=60) as client:
        # The operation's first use traces and calibrates it, longer than this deadline: done first.
        gate.open.set()
        wait_until(lambda: client.post(url + "/jacobian", json=SEED).status_code == 200, "a warm /jacobian")
        gate.open.clear()
        gate.entered.clear()
        gate.calls.clear()
        first = threading.Thread(target=lambda: client.post(url + "/jacobian", json=SEED))
        first.start()
        assert gate.entered.wait(60)
        X, y = rng.normal(size=(3, 5)), rng.normal(size=5)
        late = client.post(url + "/jacobian", json={"X": X.tolist(), "Y": y.tolist()})  # waits behind the gate
        assert late.status_code == 504 and late.json()["code"] == "deadline_exceeded"
        assert pending(app) == 0 and not gate.open.is_set()  # it gave up while still queued
        gate.open.set()
        first.join(60)
        again = client.post(url + "/jacobian", json={"X": [[1.0, 2.0]], "Y": [0.5, 0.25]})
        assert again.status_code == 200, again.text
    assert gate.calls == [(1, 2, 4), (1, 1, 2)]


def test_a_big_answer_being_encoded_does_not_stall_other_requests(
    monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    encoding, release = threading.Event(), threading.Event()
    real = npz.write

    def slow_encode(arrays: dict[str, np.ndarray], meta: dict[str, str]) -> bytes:
        if sum(a.size for a in arrays.values()) > 2**18:
            encoding.set()
            assert release.wait(60)
        return real(arrays, meta)

    monkeypatch.setattr(npz, "write", slow_encode)
    gate = Gate()
    gate.open.set()
    X, y = rng.normal(size=(64, 72)), rng.normal(size=72) / 8
    body = {"X": X.tolist(), "Y": y.tolist(), "dtype": "float64"}
    with serving(Settings(xla=False), gate) as (url, _app):

        async def scenario() -> httpx.Response:
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                big = asyncio.create_task(c.post("/jacobian", json=body, headers={"accept": NPZ}))
                while not encoding.is_set():
                    await asyncio.sleep(0.005)
                small = await asyncio.wait_for(c.post("/jacobian", json=SEED), 30)  # while the big one encodes
                assert small.status_code == 200 and not big.done()
                assert_close(
                    np.array(small.json()["J"]), oracles.jacobian(np.array(SEED["X"]), np.array(SEED["Y"])), 1e-5
                )
                release.set()
                return await big

        big = asyncio.run(scenario())
    assert big.status_code == 200
    assert_close(load_npz(big.content)["J"], oracles.jacobian(X, y), 1e-9)
