"""app/ipc/client.py against a fake engine: a `wire.Server` in a thread of this process that
answers as an engine would, from scripted replies. The worker's side of every message kind:
status and readiness, an answer through the socket, a big answer in the worker's segment and
its release, each refusal as its domain exception, and an engine that dies mid-request.
No TensorFlow, no engine process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from app.catalog import BUILTIN
from app.config import Settings
from app.errors import EngineUnavailable, MemoryBusy, Overloaded
from app.ipc import messages as m
from app.ipc import shm, wire
from app.ipc.client import EngineClient
from app.ipc.engines import Engines
from tests.support.fakes import JACOBIAN, jacobian_call

Reply = Callable[[wire.Server, wire.Received], None]
STATUS = {"pid": 4242, "tensorflow": "fake", "devices": ["/device:FAKE:0"], "onednn": False}


class FakeEngine:
    """Answers status queries itself; hands each `Compute` to `reply`, records everything."""

    def __init__(self, path: str, shm_dir: str, reply: Reply) -> None:
        self.server = wire.Server(path)
        self.mappings = shm.Mappings(shm_dir)
        self.reply = reply
        self.seen: list[m.Message] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            for received in self.server.receive(0.01):
                self.seen.append(received.message)
                if isinstance(received.message, m.StatusQuery):
                    self.server.send(received.peer, m.Status(received.message.id, STATUS))
                elif isinstance(received.message, m.Compute):
                    self.reply(self, received)  # type: ignore[arg-type]
        self.server.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


def _settings(tmp_path: Path, shm_dir: Path) -> Settings:
    return Settings(runtime_dir=str(tmp_path), shm_dir=str(shm_dir), shm_prefix="t", workers=1)


@pytest.fixture
def run(tmp_path: Path, shm_dir: Path) -> Iterator[Callable[..., object]]:
    """run(reply, scenario): a started client beside a fake engine answering with `reply`."""
    engines: list[FakeEngine] = []

    def go(reply: Reply, scenario: Callable[[EngineClient, FakeEngine], object]) -> object:
        settings = _settings(tmp_path, shm_dir)
        engine = FakeEngine(wire.endpoint(str(tmp_path), 0), str(shm_dir), reply)
        engines.append(engine)

        async def main() -> object:
            client = EngineClient(0, settings)
            client.start()
            try:
                return await scenario(client, engine)  # type: ignore[misc]
            finally:
                await client.stop()

        return asyncio.run(main())

    yield go
    for engine in engines:
        engine.stop()


def _answer_w(engine: FakeEngine, received: wire.Received) -> None:
    """W = the sum of each row's X, through the socket."""
    request = received.message
    assert isinstance(request, m.Compute)
    Xr, _Yr = wire.split(received.payload, request.arrays)
    W = Xr.sum(axis=2)
    engine.server.send(received.peer, m.Answer(request.id, "/device:FAKE:0", 0.001, ["W"], wire.specs([W])), [W])


def test_status_makes_it_ready_and_an_answer_comes_back_through_the_socket(run, rng: np.random.Generator) -> None:
    Xr, Yr = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 4))

    async def scenario(client: EngineClient, engine: FakeEngine) -> None:
        computed = await client.submit(JACOBIAN, Xr, Yr, claim=123, model=BUILTIN)
        assert client.state == "ready" and client.pid == STATUS["pid"]
        np.testing.assert_array_equal(computed.arrays["W"], Xr.sum(axis=2))
        assert computed.device == "/device:FAKE:0"
        (request,) = [s for s in engine.seen if isinstance(s, m.Compute)]
        assert (request.call, request.model, request.claim, request.inputs, request.shm) == (
            JACOBIAN,
            BUILTIN,
            123,
            None,  # small inputs: in the payload
            None,  # small answer: through the socket
        )
        computed.release()  # nothing to send: the engine released the claim when it answered
        await asyncio.sleep(0.05)
        assert not [s for s in engine.seen if isinstance(s, m.Release)]

    run(_answer_w, scenario)


def test_a_big_answer_arrives_in_the_workers_segment_and_its_release_is_sent(run, rng: np.random.Generator) -> None:
    A, F = 64, 64  # J is 2 × 64·64·64 float64: past the inline limit
    Xr, Yr = rng.normal(size=(2, A, F)), rng.normal(size=(2, F))
    J = np.broadcast_to(np.arange(float(A * A * F)).reshape(1, A, A, F), (2, A, A, F)).copy()
    assert J.nbytes > shm.INLINE_MAX

    def reply(engine: FakeEngine, received: wire.Received) -> None:
        request = received.message
        assert isinstance(request, m.Compute) and request.shm is not None
        layout = engine.mappings.write(request.shm, request.shm_size, {"W": Xr.sum(axis=2), "J": J})
        assert layout is not None
        engine.server.send(
            received.peer, m.SharedAnswer(request.id, "/device:FAKE:0", 0.01, layout.entries, layout.nbytes)
        )

    async def scenario(client: EngineClient, engine: FakeEngine) -> None:
        computed = await client.submit(jacobian_call(A, F), Xr, Yr)
        np.testing.assert_array_equal(computed.arrays["J"], J)
        assert not computed.arrays["J"].flags.owndata  # read in place from the segment
        computed.release()
        for _ in range(100):
            if any(isinstance(s, m.Release) for s in engine.seen):
                break
            await asyncio.sleep(0.01)
        (request,) = [s for s in engine.seen if isinstance(s, m.Compute)]
        assert m.Release(request.id) in engine.seen

    run(reply, scenario)


@pytest.mark.parametrize(
    ("refusal", "raised", "words"),
    [
        (lambda i: m.MemoryRefused(i, 1000, 900, 2.5), MemoryBusy, "900 bytes of the memory budget of 1,000"),
        (lambda i: m.OverloadedRefused(i, 7), Overloaded, "at capacity (7 requests waiting)"),
        (lambda i: m.EngineFailed(i, "boom"), RuntimeError, "engine error: boom"),
    ],
    ids=["memory", "overloaded", "failed"],
)
def test_each_refusal_is_raised_as_its_domain_exception(run, rng, refusal, raised, words) -> None:  # type: ignore[no-untyped-def]
    def reply(engine: FakeEngine, received: wire.Received) -> None:
        engine.server.send(received.peer, refusal(received.message.id))

    async def scenario(client: EngineClient, engine: FakeEngine) -> None:
        with pytest.raises(raised) as caught:
            await client.submit(JACOBIAN, rng.normal(size=(1, 2, 3)), rng.normal(size=(1, 3)))
        assert words in str(caught.value)
        if raised is MemoryBusy:
            assert type(caught.value) is MemoryBusy

    run(reply, scenario)


def test_an_engine_that_dies_fails_its_requests_at_once(run, rng: np.random.Generator) -> None:
    def die(engine: FakeEngine, received: wire.Received) -> None:
        engine.stopping.set()  # the loop exits and closes every connection, as a dead process's kernel does

    async def scenario(client: EngineClient, engine: FakeEngine) -> None:
        with pytest.raises(EngineUnavailable, match="not reachable"):
            await asyncio.wait_for(client.submit(JACOBIAN, rng.normal(size=(1, 2, 3)), rng.normal(size=(1, 3))), 10)
        assert client.state == "down"
        with pytest.raises(EngineUnavailable, match="down"):
            await client.submit(JACOBIAN, rng.normal(size=(1, 2, 3)), rng.normal(size=(1, 3)))

    run(die, scenario)


def test_the_models_are_unknown_until_an_engine_has_said(run, tmp_path: Path, shm_dir: Path) -> None:
    async def scenario(client: EngineClient, engine: FakeEngine) -> None:
        engines = Engines(_settings(tmp_path, shm_dir))
        assert engines.cards() is None  # no status yet: GET /models answers 503, not a short list
        engines.clients = [client]
        await client.submit(JACOBIAN, np.ones((1, 2, 3)), np.ones((1, 3)))  # it has heard a status
        assert engines.cards() == []  # this fake engine loads no repository

    run(_answer_w, scenario)


def test_readiness_waits_for_first_contact_with_a_listening_engine(run) -> None:
    """A worker just started beside a live engine says ready once it has heard from it, not 503
    while another worker, in contact already, says 200 (`Engines.first_contact` before readiness)."""

    async def scenario(client: EngineClient, engine: FakeEngine) -> str:
        assert client.state == "starting"  # started this instant: not connected yet
        await client.first_contact()
        return client.state

    assert run(_answer_w, scenario) == "ready"


def test_first_contact_does_not_wait_for_an_engine_that_is_not_listening(tmp_path: Path, shm_dir: Path) -> None:
    async def main() -> tuple[str, float]:
        client = EngineClient(0, _settings(tmp_path, shm_dir))
        client.start()
        try:
            start = asyncio.get_running_loop().time()
            await client.first_contact()
            return client.state, asyncio.get_running_loop().time() - start
        finally:
            await client.stop()

    state, waited = asyncio.run(main())
    assert state == "starting" and waited < 0.5  # still loading: readiness says so at once
