"""An HTTP worker's side of an engine process: `submit(op, *rows)` as the in-process batcher has,
over ZeroMQ (`app.ipc`). No TensorFlow here.

The client knows its engine's process id from the engine's status answers and watches it: when
the engine dies (a native fault, an out-of-memory kill), every request waiting on it fails at once
with `EngineUnavailable` (503 + Retry-After) instead of hanging, and new requests get the same
until the supervisor's replacement answers a status query. The failed requests are not retried:
a request that crashed the engine would crash its replacement too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from app import ipc, ops
from app.config import Settings
from app.errors import EngineUnavailable, Overloaded

WATCH_S = 0.05  # how often a dead engine is looked for
STATUS_S = 1.0  # how often a live engine's status is refreshed
FIRST_CONTACT_S = 2.0  # how long a new worker's first requests wait to hear from a live engine


@dataclass(frozen=True)
class Answer:
    arrays: dict[str, np.ndarray]
    device: str


def pid_alive(pid: int) -> bool:
    """Running and not a zombie (the supervisor reaps within half a second)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


class EngineClient:
    def __init__(self, index: int, settings: Settings, observe_ipc: Any = None) -> None:
        assert settings.runtime_dir is not None
        self.index = index
        self.settings = settings
        self.status: dict[str, Any] = {}
        self.state = "starting"  # "ready" | "starting" | "down"
        self.pid: int | None = None
        self._observe_ipc = observe_ipc
        self._ids = itertools.count()
        self._pending: dict[int, tuple[asyncio.Future[Any], ipc.Segment | None]] = {}
        self.arena = ipc.Arena(settings.shm_dir, settings.shm_prefix)
        self._ctx = zmq.asyncio.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for an engine that is not there
        self._sock.connect(ipc.endpoint(settings.runtime_dir, index))
        self._tasks: list[asyncio.Task[None]] = []
        self._seen = asyncio.Event()
        self._status_sent = 0.0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._watch())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all("the service is shutting down")
        self._sock.close()
        self.arena.close()

    async def submit(self, op: str, *rows: np.ndarray) -> Answer:
        if self.state == "starting":  # this worker has not heard from the engine yet: briefly wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._seen.wait(), FIRST_CONTACT_S)
        if self.state != "ready":
            raise EngineUnavailable(f"The engine is {self.state}; retry shortly")
        request_id = next(self._ids)
        segment = self._segment_for(op, rows)
        header = {
            "id": request_id,
            "op": op,
            "dtype": rows[0].dtype.name,
            "shapes": [list(r.shape) for r in rows],
            "shm": segment.name if segment else None,
            "shm_size": segment.size if segment else 0,
            "worker": os.getpid(),
        }
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, segment)
        sent = time.perf_counter()
        try:
            await self._sock.send_multipart(ipc.pack(header, list(rows)), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._pending.pop(request_id)
            if segment is not None:
                self.arena.give_back(segment)  # the engine never saw it
            raise EngineUnavailable("The engine is not accepting work (restarting); retry shortly") from None
        try:
            answer, compute_s = await future
        except asyncio.CancelledError:  # a deadline or a hang-up: the engine need not compute it
            with contextlib.suppress(zmq.ZMQError):
                await self._sock.send_multipart(ipc.pack({"cancel": request_id}), flags=zmq.NOBLOCK)
            if segment is not None:
                self.arena.discard(segment)  # the engine may yet write into it
            raise
        except EngineUnavailable:
            if segment is not None:
                self.arena.discard(segment)
            raise
        finally:
            self._pending.pop(request_id, None)
        if self._observe_ipc is not None:
            self._observe_ipc(max(time.perf_counter() - sent - compute_s, 0.0))
        return answer  # type: ignore[no-any-return]

    def _segment_for(self, op: str, rows: tuple[np.ndarray, ...]) -> ipc.Segment | None:
        """A shared-memory segment for an answer too big for the socket."""
        n, A, F = rows[0].shape
        shapes = ops.output_shapes(op, n, A, F).values()
        nbytes = sum(int(np.prod(s)) * rows[0].itemsize + ipc.ALIGN for s in shapes)
        if nbytes <= ipc.INLINE_MAX:
            return None
        try:
            return self.arena.lease(nbytes)
        except OSError:  # shared memory full: slower through the socket, but an answer
            return None

    async def _read(self) -> None:
        while True:
            header_frame, *frames = await self._sock.recv_multipart(copy=False)
            header = ipc.unpack_header(header_frame)
            if "status" in header:
                self._on_status(header["status"])
                continue
            future, segment = self._pending.get(header["id"], (None, None))
            if future is None or future.done():
                continue  # cancelled or failed: its segment, if any, was discarded then
            if "shm" in header:
                assert segment is not None
                layout = ipc.Layout([tuple(e) for e in header["shm"]], header["nbytes"])  # type: ignore[misc]
                answer = Answer(self.arena.views(segment, layout), header["device"])
            else:
                if segment is not None:
                    self.arena.give_back(segment)
                if not header["ok"]:
                    future.set_exception(self._error(header))
                    continue
                arrays = {
                    name: ipc.array_from_frame(f, dtype, shape)
                    for (name, dtype, shape), f in zip(header["arrays"], frames, strict=True)
                }
                answer = Answer(arrays, header["device"])
            future.set_result((answer, header["compute_s"]))

    def _error(self, header: dict[str, Any]) -> Exception:
        if header["error"] == "overloaded":
            return Overloaded(
                f"The service is at capacity ({self.settings.max_pending} requests waiting); retry shortly"
            )
        return RuntimeError(f"engine error: {header.get('message', '')}")

    def _on_status(self, status: dict[str, Any]) -> None:
        self.status = status
        self.pid = status["pid"]
        self.state = "ready"
        self._seen.set()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            if self.pid is not None and not pid_alive(self.pid):
                self.state, self.pid = "down", None
                self._fail_all(f"The engine process {self.index} died while computing; retry shortly")
            now = time.monotonic()
            due = STATUS_S if self.state == "ready" else WATCH_S
            if now - self._status_sent >= due:
                self._status_sent = now
                with contextlib.suppress(zmq.Again, zmq.ZMQError):
                    await self._sock.send_multipart(ipc.pack({"status": True, "id": -1}), flags=zmq.NOBLOCK)

    def _fail_all(self, message: str) -> None:
        for future, _segment in list(self._pending.values()):
            if not future.done():
                future.set_exception(EngineUnavailable(message))


class Engines:
    """The engine processes a worker talks to; each request goes to the ready one with least work."""

    def __init__(self, settings: Settings, observe_ipc: Any = None) -> None:
        self.clients = [EngineClient(i, settings, observe_ipc) for i in range(settings.engines)]

    def start(self) -> None:
        for c in self.clients:
            c.start()

    async def stop(self) -> None:
        for c in self.clients:
            await c.stop()

    async def submit(self, op: str, *rows: np.ndarray) -> Answer:
        ready = [c for c in self.clients if c.state == "ready"] or self.clients
        return await min(ready, key=lambda c: c.in_flight).submit(op, *rows)

    def readiness(self) -> dict[str, Any]:
        engines = [{"index": c.index, "pid": c.pid, "state": c.state} for c in self.clients]
        down = [e for e in engines if e["state"] != "ready"]
        statuses = [c.status for c in self.clients if c.status]
        return {
            "status": "ready" if not down else "starting",
            "reason": "; ".join(f"engine {e['index']} is {e['state']}" for e in down) or None,
            "engine_pids": [e["pid"] for e in engines if e["pid"] is not None],
            "engines": engines,
            "tensorflow": statuses[0]["tensorflow"] if statuses else None,
            "devices": sorted({d for s in statuses for d in s["devices"]}),
            "onednn": any(s["onednn"] for s in statuses) if statuses else None,
            "trace_count": sum(s["trace_count"] for s in statuses) if statuses else None,
            "xla_shapes": sum(s["xla_shapes"] for s in statuses) if statuses else None,
        }
