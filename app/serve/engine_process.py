"""`python -m app.serve.engine_process INDEX`: one engine process, started by the supervisor for one
device. It owns TensorFlow, the traced functions, XLA and the dynamic batcher for requests from
every HTTP worker, which reach it over one Unix-domain socket (`app.ipc.wire.Server`).

The loop reads whatever has arrived, then runs the oldest request together with every queued request of
the same (operation, dtype, A, F), up to `max_batch_rows` rows, and reads again before the next
batch: no waiting window, and a request its worker cancelled (the client hung up or its deadline
passed) or whose worker is gone is never computed. At most `max_pending` requests wait; the
newest beyond that are answered "overloaded".

Memory (`app.service.budget`): each request comes with the bytes it claims. It joins the run queue only
when its claim fits the budget beside the claims already held (first come, first admitted), and
holds it until its worker says the answer has been sent ("release"), it is cancelled, it fails,
or its worker is gone (an answer small enough for the socket releases it when it is sent). So a
batch, made of admitted requests only, never stacks past the budget. A request that has waited
`memory_wait_s` for memory is answered "memory" (503 + Retry-After).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app import lifeline
from app.config import Settings, get_settings
from app.ipc import wire as ipc
from app.scheduling.batcher import BatchStats, Job, stack_rows, take_batch
from app.scheduling.ledger import Ledger
from app.serve import logs

log = logging.getLogger("app.engine")


@dataclass
class _Job(Job):
    peer: socket.socket  # the worker's connection
    id: int
    shm: str | None  # the worker's shared-memory segment for the answer, if it is big
    shm_size: int
    worker: int  # the worker's process id
    claim: int  # bytes of the memory budget it needs
    arrived: float = field(default_factory=time.monotonic)


class EngineLoop:
    def __init__(self, engine: Any, server: ipc.Server, settings: Settings, info: dict[str, Any], metrics: Any) -> None:
        self.engine = engine
        self.server = server
        self.settings = settings
        self.info = info
        self.metrics = metrics
        self.queue: deque[_Job] = deque()  # admitted: their memory is claimed
        self.waiting: deque[_Job] = deque()  # for memory to be released
        self.ledger = Ledger(settings.memory_budget_bytes)
        self.claims: dict[tuple[socket.socket, int], int] = {}
        self.mappings = ipc.Mappings(settings.shm_dir)
        self.stopping = False

    def run(self) -> None:
        while not (self.stopping and not self.queue and not self.waiting):
            self.drain(0 if self.queue else 0.1)
            if self.queue:
                batch, self.queue = take_batch(self.queue, self.settings.max_batch_rows)
                self.run_batch(batch)
            self.metrics.claimed(self.ledger.claimed)

    def drain(self, timeout: float) -> None:
        """Take in what has arrived (waiting up to `timeout` for something to)."""
        for message in self.server.receive(timeout):
            self.handle(message)
        if self.server.gone:  # workers that died: nobody is waiting for their requests
            gone, self.server.gone = self.server.gone, set()
            self.drop(lambda j: j.peer in gone)
            for key in [k for k in self.claims if k[0] in gone]:
                self.ledger.release(self.claims.pop(key))
        self.admit()
        self.mappings.prune()
        patience = time.monotonic() - self.settings.memory_wait_s
        while self.waiting and self.waiting[0].arrived < patience:  # the oldest waited longest
            self.fail(self.waiting.popleft(), {"error": "memory", "claimed": self.ledger.claimed})
        excess = len(self.queue) + len(self.waiting) - self.settings.max_pending
        for _ in range(max(excess, 0)):  # the newest go: those waiting for memory first
            job = (self.waiting or self.queue).pop()
            reason = "overloaded" if (job.peer, job.id) in self.claims else "memory"
            self.fail(job, {"error": reason, "claimed": self.ledger.claimed})

    def handle(self, message: ipc.Message) -> None:
        peer, header = message.peer, message.header
        if "release" in header:  # answered and sent, or given up on
            self.drop(lambda j: j.peer is peer and j.id == header["release"])
            self.ledger.release(self.claims.pop((peer, header["release"]), 0))
        elif "status" in header:
            status = {**self.info, **self.engine.describe(), "memory_claimed_bytes": self.ledger.claimed}
            self.reply(peer, {"id": header["id"], "status": status})
        else:
            rows = self.inputs(header, message.payload)
            if rows is None:  # its worker gave up on it and took the segment back
                self.reply(peer, {"id": header["id"], "ok": False, "error": "internal", "message": "inputs gone"})
                return
            self.waiting.append(
                _Job(
                    header["op"],
                    rows,
                    peer,
                    header["id"],
                    header["shm"],
                    header["shm_size"],
                    header["worker"],
                    header["claim"],
                )
            )

    def inputs(self, header: dict[str, Any], payload: bytes) -> tuple[np.ndarray, ...] | None:
        """The request's rows: from the socket's payload, or in place in the worker's segment."""
        if header.get("inputs") is None:
            return tuple(ipc.split(payload, header["arrays"]))
        name, size, entries, nbytes = header["inputs"]
        views = self.mappings.views(name, size, ipc.Layout([tuple(e) for e in entries], nbytes))
        return None if views is None else tuple(views)

    def admit(self) -> None:
        """Move waiting requests to the run queue, oldest first, while their claims fit."""
        while self.waiting and self.ledger.fits(self.waiting[0].claim):
            job = self.waiting.popleft()
            self.ledger.claim(job.claim)
            self.claims[job.peer, job.id] = job.claim
            self.queue.append(job)

    def drop(self, which: Any) -> None:
        self.queue = deque(j for j in self.queue if not which(j))
        self.waiting = deque(j for j in self.waiting if not which(j))

    def fail(self, job: _Job, error: dict[str, Any]) -> None:
        self.ledger.release(self.claims.pop((job.peer, job.id), 0))
        self.reply(job.peer, {"id": job.id, "ok": False, **error})

    def run_batch(self, batch: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            result = self.engine.run_rows(batch[0].op, *stack_rows(batch))
        except Exception as err:  # the workers map it to a status; the engine keeps serving
            log.exception("engine call failed")
            for job in batch:
                self.fail(job, {"error": "internal", "message": str(err)[:300]})
            return
        seconds = time.perf_counter() - start
        workers = len({j.worker for j in batch})
        self.metrics.observe(BatchStats(batch[0].op, sum(j.n for j in batch), len(batch), seconds, workers))
        offset = 0
        for job in batch:
            arrays = {k: a[offset : offset + job.n] for k, a in result.arrays.items()}
            offset += job.n
            self.answer(job, arrays, result.device, seconds)

    def answer(self, job: _Job, arrays: dict[str, np.ndarray], device: str, seconds: float) -> None:
        header: dict[str, Any] = {"id": job.id, "ok": True, "device": device, "compute_s": seconds}
        if job.shm is not None:
            layout = self.mappings.write(job.shm, job.shm_size, arrays)
            if layout is not None:
                self.reply(job.peer, {**header, "shm": layout.entries, "nbytes": layout.nbytes})
                return
            log.warning("segment %s cannot take the answer; sending it through the socket", job.shm)
        header["names"] = list(arrays)
        header["arrays"] = ipc.specs(list(arrays.values()))
        self.reply(job.peer, header, list(arrays.values()))
        # A small answer's memory is spent once it is sent: its claim ends here, without a message.
        self.ledger.release(self.claims.pop((job.peer, job.id), 0))

    def reply(self, peer: socket.socket, header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> None:
        self.server.send(peer, header, arrays)


def serve(index: int, settings: Settings) -> None:
    from prometheus_client import CollectorRegistry

    from app.engine import derivatives as engine_module  # TensorFlow: only in this process
    from app.http.observability import EngineMetrics

    engine_module.enable_gpu_memory_growth()
    engine = engine_module.Engine(settings.xla, settings.xla_after, settings.xla_max_shapes)
    engine.warm_up()
    info = {"index": index, "pid": os.getpid()}
    assert settings.runtime_dir is not None
    server = ipc.Server(ipc.endpoint(settings.runtime_dir, index))
    loop = EngineLoop(engine, server, settings, info, EngineMetrics(CollectorRegistry()))

    def stop(*_: Any) -> None:
        loop.stopping = True  # finish what is queued, then exit

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; Ctrl-C reaches the group
    log.info("engine %d ready: pid %d, %s", index, os.getpid(), ", ".join(engine.describe()["devices"]))
    loop.run()
    server.close()


if __name__ == "__main__":
    lifeline.die_with_parent()
    s = get_settings()
    logs.configure(s.log_level)
    serve(int(sys.argv[1]), s)
