"""`python -m app.serve.engine_process INDEX`: one engine process, started by the supervisor for one
device. It owns TensorFlow, the traced functions, XLA and the dynamic batcher for requests from
every HTTP worker, which reach it over one Unix-domain socket (`app.ipc.wire.Server`), in the
messages of `app.ipc.messages`.

The loop reads whatever has arrived, then runs the batch the scheduling policy takes
(`app.scheduling.policy`, the same as in process: the oldest request together with every queued
request of the same (model, call, dtype, shapes), up to `max_batch_rows` rows), and reads again
before the next batch: no waiting window, and a request its worker cancelled (the client hung up
or its deadline passed) or whose worker is gone is never computed. At most `max_pending`
requests wait; one arriving beyond that is refused (`OverloadedRefused`).

Memory (`app.service.budget`): each request comes with the bytes it claims. It joins the run queue only
when its claim fits the budget beside the claims already held (first come, first admitted), and
holds it until its worker says the answer has been sent (`Release`), it is cancelled, it fails,
or its worker is gone (an answer small enough for the socket releases it when it is sent). So a
batch, made of admitted requests only, never stacks past the budget. A request that has waited
`memory_wait_s` for memory is refused (`MemoryRefused`: 503 + Retry-After).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from app import lifeline
from app.config import Settings, get_settings
from app.errors import DeadlineExceeded, InvalidInput, ModelRefused, Overloaded, UnknownModel
from app.ipc import shm, wire
from app.ipc.messages import (
    Answer,
    Compute,
    DeadlineRefused,
    EngineFailed,
    InputRefused,
    MemoryRefused,
    Message,
    NotFoundRefused,
    OverloadedRefused,
    Push,
    Pushed,
    PushRefused,
    Refused,
    Release,
    SharedAnswer,
    Status,
    StatusQuery,
    Values,
    ValuesQuery,
)
from app.scheduling.ledger import Ledger
from app.scheduling.policy import BatchStats, Job, Scheduler, label, run_options, split_rows, stack_rows
from app.serve import logs
from app.serve.pushes import Pushes

log = logging.getLogger("app.engine")


@dataclass(eq=False)
class _Job(Job):
    peer: socket.socket  # the worker's connection
    id: int
    shm: str | None  # the worker's shared-memory segment for the answer, if it is big
    shm_size: int
    worker: int  # the worker's process id


class EngineLoop:
    """The socket driver of `app.scheduling.policy.Scheduler`: reads requests from every worker,
    offers them, runs what the policy takes, answers, and gives claims back."""

    def __init__(
        self, engine: Any, server: wire.Server, settings: Settings, info: dict[str, Any], metrics: Any
    ) -> None:
        self.engine = engine
        self.server = server
        self.settings = settings
        self.info = info
        self.metrics = metrics
        s = settings
        self.scheduler: Scheduler[_Job] = Scheduler(
            s.memory_budget_bytes, s.max_batch_rows, s.max_pending, s.memory_wait_s
        )
        self.held: dict[tuple[socket.socket, int], _Job] = {}  # every job from arrival until its claim is released
        self.mappings = shm.Mappings(settings.shm_dir)
        assert settings.runtime_dir is not None
        self.pushes = Pushes(settings.runtime_dir)
        self.stopping = False

    @property
    def ledger(self) -> Ledger:
        return self.scheduler.ledger

    def run(self) -> None:
        while not (self.stopping and self.scheduler.pending == 0):
            self.drain(0 if self.scheduler.queued else 0.1)
            batch = self.scheduler.take()
            if batch:
                try:
                    self.run_batch(batch)
                finally:
                    self.scheduler.finished(batch)
            self.metrics.claimed(self.ledger.claimed)

    def drain(self, timeout: float) -> None:
        """Take in what has arrived (waiting up to `timeout` for something to)."""
        for message in self.server.receive(timeout):
            self.handle(message)
        if self.server.gone:  # workers that died: nobody is waiting for their requests
            gone, self.server.gone = self.server.gone, set()
            self.scheduler.drop(lambda j: j.peer in gone)
            for key in [k for k in self.held if k[0] in gone]:
                self.scheduler.release(self.held.pop(key))
        self.mappings.prune()
        for job in self.scheduler.expired():  # the oldest waited longest
            s = self.settings
            self.fail(job, MemoryRefused(job.id, s.memory_budget_bytes, self.ledger.claimed, s.memory_wait_s))

    def handle(self, received: wire.Received) -> None:
        peer, message = received.peer, received.message
        if isinstance(message, Release):  # answered and sent, or given up on
            job = self.held.pop((peer, message.id), None)
            if job is not None:
                self.scheduler.release(job)
        elif isinstance(message, StatusQuery):
            status = {**self.info, **self.engine.describe(), "memory_claimed_bytes": self.ledger.claimed}
            self.reply(peer, Status(message.id, status))
        elif isinstance(message, Compute):
            self.offer(peer, message, received.payload)
        elif isinstance(message, Push):
            self.push(peer, message, received.payload)
        elif isinstance(message, ValuesQuery):
            try:
                version, values = self.engine.values(message.model, message.version)
            except UnknownModel as err:
                self.reply(peer, NotFoundRefused(message.id, err.message))
            else:
                arrays = list(values.values())
                self.reply(peer, Values(message.id, version, list(values), wire.specs(arrays)), arrays)
        else:
            log.warning("ignored a %s message from a worker", message.kind)

    def offer(self, peer: socket.socket, request: Compute, payload: bytes) -> None:
        rows = self.inputs(request, payload)
        if rows is None:  # its worker gave up on it and took the segment back
            self.reply(peer, EngineFailed(request.id, "inputs gone"))
            return
        r = request
        try:  # on the version it names, or the newest now: a push while it waits does not change it
            call, pinned = self.engine.pin(r.model, r.call)
        except UnknownModel as err:
            self.reply(peer, NotFoundRefused(r.id, err.message))
            return
        deadline = time.monotonic() + self.settings.deadline_s  # when its worker gives up on it
        job = _Job(
            call,
            rows,
            r.model,
            peer,
            r.id,
            r.shm,
            r.shm_size,
            r.worker,
            deadline=deadline,
            claim_after=r.claim_after,
            pinned=pinned,
        )
        try:
            self.scheduler.offer(job, r.claim)
        except Overloaded:
            self.reply(peer, OverloadedRefused(job.id, self.settings.max_pending))
            return
        self.held[peer, job.id] = job

    def push(self, peer: socket.socket, request: Push, payload: bytes) -> None:
        """A new version of a model's variables, made between two batches: a request already
        taken in keeps the version it was pinned to."""
        values = dict(zip(request.names, wire.split(payload, request.arrays), strict=True))
        try:
            version, card = self.engine.push(request.model, values, request.version)
        except UnknownModel as err:
            self.reply(peer, NotFoundRefused(request.id, err.message))
        except InvalidInput as err:
            self.reply(peer, PushRefused(request.id, err.message))
        else:
            self.pushes.record(
                request.model, version, lambda: self.engine.values(request.model, version)[1], card.versions
            )
            self.reply(peer, Pushed(request.id, version, dataclasses.asdict(card)))

    def inputs(self, request: Compute, payload: bytes) -> tuple[np.ndarray, ...] | None:
        """The request's rows: from the socket's payload, or in place in the worker's segment."""
        placed = request.inputs
        if placed is None:
            return tuple(wire.split(payload, request.arrays))
        views = self.mappings.views(placed.segment, placed.size, shm.Layout(placed.entries, placed.nbytes))
        return None if views is None else tuple(views)

    def fail(self, job: _Job, refusal: Refused) -> None:
        self.done(job)
        self.reply(job.peer, refusal)

    def done(self, job: _Job) -> None:
        """Its claim ends: the answer is on the socket, or it failed."""
        if self.held.pop((job.peer, job.id), None) is not None:
            self.scheduler.release(job)

    def run_batch(self, batch: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            result = self.engine.run(batch[0].call, *stack_rows(batch), **run_options(batch))
            answers = list(split_rows(batch, result.arrays))
        except (ModelRefused, DeadlineExceeded) as err:  # some request's inputs, or time: find whose
            if len(batch) > 1:
                for job in batch:
                    self.run_batch([job])
            elif isinstance(err, ModelRefused):
                self.fail(batch[0], InputRefused(batch[0].id, err.message))
            else:
                self.fail(batch[0], DeadlineRefused(batch[0].id, err.message))
            return
        except Exception as err:  # the workers map it to a status; the engine keeps serving
            log.exception("engine call failed")
            for job in batch:
                self.fail(job, EngineFailed(job.id, str(err)[:300]))
            return
        seconds = time.perf_counter() - start
        workers = len({j.worker for j in batch})
        self.metrics.observe(
            BatchStats(label(batch[0].call, batch[0].model), sum(j.n for j in batch), len(batch), seconds, workers)
        )
        for job, arrays in answers:
            self.answer(job, arrays, result.device, seconds, result.version)

    def answer(self, job: _Job, arrays: dict[str, np.ndarray], device: str, seconds: float, version: int) -> None:
        if job.shm is not None:
            layout = self.mappings.write(job.shm, job.shm_size, arrays)
            if layout is not None:
                self.reply(job.peer, SharedAnswer(job.id, device, seconds, layout.entries, layout.nbytes, version))
                return  # its claim is held until the worker has sent the answer (`Release`)
            log.warning("segment %s cannot take the answer; sending it through the socket", job.shm)
        values = list(arrays.values())
        self.reply(job.peer, Answer(job.id, device, seconds, list(arrays), wire.specs(values), version), values)
        # A small answer's memory is spent once it is sent: its claim ends here, without a message.
        self.done(job)

    def reply(self, peer: socket.socket, message: Message, arrays: list[np.ndarray] | None = None) -> None:
        self.server.send(peer, message, arrays)


def serve(index: int, settings: Settings) -> None:
    from prometheus_client import CollectorRegistry

    from app.engine import derivatives as engine_module  # TensorFlow: only in this process
    from app.http.observability import EngineMetrics

    engine_module.enable_gpu_memory_growth()
    engine = engine_module.Engine.from_settings(settings)
    info = {"index": index, "pid": os.getpid()}
    assert settings.runtime_dir is not None
    Pushes(settings.runtime_dir).replay(engine)  # before it listens: the versions pushed before a restart
    server = wire.Server(wire.endpoint(settings.runtime_dir, index))
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
