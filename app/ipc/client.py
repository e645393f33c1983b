"""An HTTP worker's side of an engine process: `submit(op, *rows)` as the in-process batcher has,
over the engine's Unix socket (`app.ipc.wire`). No TensorFlow here.

When the engine dies (a native fault, an out-of-memory kill) the kernel closes its end of the
connection: every request waiting on it fails at once with `EngineUnavailable` (503 +
Retry-After) instead of hanging, and new requests get the same until the client has reconnected
to the supervisor's replacement and heard its status. The failed requests are not retried: a
request that crashed the engine would crash its replacement too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from typing import Any

import numpy as np

from app.calls import Call, Computed
from app.config import Settings
from app.errors import EngineUnavailable
from app.ipc import shm, wire
from app.ipc.messages import (
    Answer,
    Compute,
    Message,
    Placed,
    Push,
    Pushed,
    Refusal,
    Release,
    SharedAnswer,
    Status,
    StatusQuery,
    Values,
    ValuesQuery,
)

WATCH_S = 0.05  # how often a lost engine is reconnected to
STATUS_S = 1.0  # how often a live engine's status is refreshed
FIRST_CONTACT_S = 2.0  # how long a new worker's first requests wait to hear from a live engine


def _nothing() -> None:
    pass


class EngineClient:
    def __init__(self, index: int, settings: Settings, observe_ipc: Any = None) -> None:
        assert settings.runtime_dir is not None
        self.index = index
        self.settings = settings
        self.path = wire.endpoint(settings.runtime_dir, index)
        self.status: dict[str, Any] = {}
        self.state = "starting"  # "ready" | "starting" | "down"
        self.pid: int | None = None
        self._observe_ipc = observe_ipc
        self._ids = itertools.count()
        self._pending: dict[int, tuple[asyncio.Future[Any], shm.Segment | None]] = {}
        # Idle segments are memory no request has claimed: keep few of them.
        keep = min(1 << 30, settings.memory_budget_bytes // (4 * settings.workers))
        self.arena = shm.Arena(settings.shm_dir, settings.shm_prefix, keep_bytes=keep)
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seen = asyncio.Event()
        self._status_sent = 0.0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._watch())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all("the service is shutting down")
        if self._writer is not None:
            self._writer.close()
        self.arena.close()

    async def first_contact(self) -> None:
        """Wait briefly for an engine that is listening but that this worker has not heard from
        yet (it connects within WATCH_S): a request waits for it too, so readiness does, rather
        than say 503 from this worker while another one, in contact already, says 200."""
        if self.state == "starting" and os.path.exists(self.path):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._seen.wait(), FIRST_CONTACT_S)

    async def submit(
        self, call: Call, *rows: np.ndarray, claim: int = 0, model: str = "", claim_after: int = 0
    ) -> Computed:
        if self.state == "starting":  # this worker has not heard from the engine yet: briefly wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._seen.wait(), FIRST_CONTACT_S)
        if self.state != "ready" or self._writer is None:
            raise EngineUnavailable(f"The engine is {self.state}; retry shortly")
        request_id = next(self._ids)
        segment = self._segment_for(call, rows)
        inputs = self._inputs_in_shm(rows)
        request = Compute(
            request_id,
            call,
            model,
            wire.specs(rows),
            Placed(inputs[0].name, inputs[0].size, inputs[1].entries, inputs[1].nbytes) if inputs else None,
            segment.name if segment else None,
            segment.size if segment else 0,
            os.getpid(),
            claim,
            claim_after,
        )
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, segment)
        sent = time.perf_counter()
        self._writer.writelines(wire.frames(request, () if inputs else rows))
        answered = False  # by the engine, which has then stopped reading the inputs
        try:
            await self._writer.drain()  # only waits when a big input is still being written
            try:
                arrays, device, compute_s, version = await future
            finally:
                answered = (
                    future.done() and not future.cancelled() and not isinstance(future.exception(), EngineUnavailable)
                )
        except asyncio.CancelledError:  # a deadline or a hang-up: the engine need not compute it
            self._send(Release(request_id))
            if segment is not None:
                self.arena.discard(segment)  # the engine may yet write into it
            raise
        except (EngineUnavailable, ConnectionError):
            if segment is not None:
                self.arena.discard(segment)
            raise EngineUnavailable(f"The engine process {self.index} is not reachable; retry shortly") from None
        finally:
            self._pending.pop(request_id, None)
            if inputs is not None:  # reused only once the engine is done with it
                (self.arena.give_back if answered else self.arena.discard)(inputs[0])
        if self._observe_ipc is not None:
            self._observe_ipc(max(time.perf_counter() - sent - compute_s, 0.0))
        if segment is None:  # answered through the socket: the engine has released the claim
            return Computed(arrays, device, _nothing, version)
        return Computed(arrays, device, lambda: self._send(Release(request_id)), version)

    async def push(self, model: str, values: dict[str, np.ndarray], version: int = 0) -> tuple[int, dict[str, Any]]:
        """New values for a model's variables (`Push`): the version this engine made, and its card."""
        if self.state != "ready" or self._writer is None:
            raise EngineUnavailable(f"The engine process {self.index} is {self.state}; retry the push shortly")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, None)
        arrays = list(values.values())
        self._writer.writelines(wire.frames(Push(request_id, model, list(values), wire.specs(arrays), version), arrays))
        try:
            await self._writer.drain()
            pushed: Pushed = await future
        finally:
            self._pending.pop(request_id, None)
        models = [pushed.card if c["name"] == model else c for c in self.status.get("models", [])]
        self.status = {**self.status, "models": models}  # seen at once, not at the next status
        return pushed.version, pushed.card

    async def values(self, model: str, version: int = 0) -> tuple[int, dict[str, np.ndarray]]:
        """A version of the model's variables' values (`ValuesQuery`)."""
        if self.state != "ready" or self._writer is None:
            raise EngineUnavailable(f"The engine process {self.index} is {self.state}; retry shortly")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, None)
        self._send(ValuesQuery(request_id, model, version))
        try:
            found: tuple[int, dict[str, np.ndarray]] = await future
        finally:
            self._pending.pop(request_id, None)
        return found

    def _send(self, message: Message) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.writelines(wire.frames(message))

    def _inputs_in_shm(self, rows: tuple[np.ndarray, ...]) -> tuple[shm.Segment, shm.Layout] | None:
        """Big inputs go through shared memory: one copy, instead of four and many wake-ups."""
        if sum(r.nbytes for r in rows) <= shm.INLINE_MAX:
            return None
        return self.arena.fill({str(i): r for i, r in enumerate(rows)})

    def _segment_for(self, call: Call, rows: tuple[np.ndarray, ...]) -> shm.Segment | None:
        """A shared-memory segment for an answer too big for the socket (the call knows its sizes)."""
        nbytes = call.output_bytes(len(rows[0])) + shm.ALIGN * call.arrays
        if nbytes <= shm.INLINE_MAX:
            return None
        try:
            return self.arena.lease(nbytes)
        except OSError:  # shared memory full: slower through the socket, but an answer
            return None

    async def _connect(self) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(self.path)
        except OSError:  # not listening yet (starting, or its replacement still warming up)
            return
        self._writer = writer
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.get_running_loop().create_task(self._read(reader, writer)))
        self._status_sent = time.monotonic()
        self._send(StatusQuery())

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                self._on_message(*await wire.read_message(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:  # the engine is gone (or this client is stopping)
            writer.close()
            self._writer = None
            if self.state == "ready":
                self.state, self.pid = "down", None
            self._fail_all(f"The engine process {self.index} died while computing; retry shortly")

    def _on_message(self, message: Message, payload: bytes) -> None:
        if isinstance(message, Status):
            self._on_status(message.status)
            return
        future, segment = self._pending.get(message.id, (None, None))
        if future is None or future.done():
            return  # cancelled or failed: its segment, if any, was discarded then
        if isinstance(message, SharedAnswer):
            assert segment is not None
            layout = shm.Layout(message.entries, message.nbytes)
            views = self.arena.views(segment, layout)
            future.set_result((views, message.device, message.compute_s, message.version))
            return
        if segment is not None:
            self.arena.give_back(segment)
        if isinstance(message, Refusal):
            future.set_exception(message.exception())
        elif isinstance(message, Pushed):
            future.set_result(message)
        elif isinstance(message, Values):
            future.set_result(
                (message.version, dict(zip(message.names, wire.split(payload, message.arrays), strict=True)))
            )
        elif isinstance(message, Answer):
            arrays = dict(zip(message.names, wire.split(payload, message.arrays), strict=True))
            future.set_result((arrays, message.device, message.compute_s, message.version))

    def _on_status(self, status: dict[str, Any]) -> None:
        self.status = status
        self.pid = status["pid"]
        self.state = "ready"
        self._seen.set()

    async def _watch(self) -> None:
        while True:
            if self._writer is None:
                await self._connect()
            elif time.monotonic() - self._status_sent >= STATUS_S:
                self._status_sent = time.monotonic()
                self._send(StatusQuery())
            await asyncio.sleep(WATCH_S)

    def _fail_all(self, message: str) -> None:
        for future, _segment in list(self._pending.values()):
            if not future.done():
                future.set_exception(EngineUnavailable(message))
