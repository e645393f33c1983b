"""Dynamic batching in process: concurrent requests with the same (model, call, dtype, shapes) are
stacked into one TensorFlow call on one dedicated worker thread, by the policy of
`app.scheduling.policy.Scheduler` (the engine process runs the same policy).

There is no waiting window: a lone request runs at once. Requests that arrive while a batch
is running queue up and all run together in the next call (up to `max_batch_rows` rows),
so batching grows with load by itself. At most `max_pending` requests run or wait; the next
one is refused (Overloaded) instead of queueing without end. A request joins the queue only
once its memory claim fits the budget, and holds it until the caller releases it
(`Computed.release`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.calls import Call, Computed
from app.errors import DeadlineExceeded, ModelRefused
from app.scheduling.ledger import Ledger
from app.scheduling.policy import BatchStats, Job, Scheduler, label, run_options, split_rows, stack_rows

__all__ = ["BatchStats", "Batcher", "RunRows"]

RunRows = Callable[..., Any]  # (call, *rows, model=..., deadline=...) -> engine.Result


@dataclass(eq=False)
class _Job(Job):
    future: asyncio.Future[Any]


class Batcher:
    def __init__(
        self,
        run_rows: RunRows,
        max_batch_rows: int,
        max_pending: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        memory_budget: int = 1 << 62,
        memory_wait_s: float = 10.0,
        deadline_s: float = math.inf,
        pin: Callable[[str, Call], tuple[Call, Any]] | None = None,
    ) -> None:
        self.deadline_s = deadline_s
        self._run_rows = run_rows
        self._pin = pin  # a call on the version it names, or the newest now (`Engine.pin`)
        self._on_batch = on_batch
        self.scheduler: Scheduler[_Job] = Scheduler(memory_budget, max_batch_rows, max_pending, memory_wait_s)
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tensorflow")
        self._task: asyncio.Task[None] | None = None

    @property
    def ledger(self) -> Ledger:
        return self.scheduler.ledger

    @property
    def pending(self) -> int:
        return self.scheduler.pending

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued or running, then stop the worker."""
        while not self.scheduler.idle:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(
        self, call: Call, *rows: np.ndarray, claim: int = 0, model: str = "", claim_after: int = 0
    ) -> Computed:
        """Queue rows (each with a leading row axis) for `call` of `model`, once `claim` bytes fit
        the budget; returns their outputs, holding the claim (`claim_after` once computed, if
        less) until `release` is called."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.deadline_s
        call, pinned = self._pin(model, call) if self._pin is not None else (call, None)
        job = _Job(call, rows, model, loop.create_future(), deadline=deadline, claim_after=claim_after, pinned=pinned)
        self.scheduler.offer(job, claim)  # Overloaded at the cap
        self._wakeup.set()
        if not self.scheduler.admitted(job):
            loop.call_later(self.scheduler.memory_wait_s + 1e-3, self._expire)
        try:
            arrays, device, version = await job.future
        except BaseException:
            self._release(job)
            raise
        return Computed(arrays, device, lambda: self._release(job), version)

    def _expire(self) -> None:
        for job in self.scheduler.expired():
            if not job.future.done():
                job.future.set_exception(self.scheduler.memory_busy())

    def _release(self, job: _Job) -> None:
        self.scheduler.release(job)
        self._wakeup.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while batch := self.scheduler.take():
                # A client that gave up (deadline, disconnect) no longer costs work.
                live = [j for j in batch if not j.future.done()]
                try:
                    if live:
                        await self._run(loop, live)
                finally:
                    self.scheduler.finished(batch)

    def _timed(self, batch: list[_Job], rows: tuple[np.ndarray, ...]) -> tuple[Any, float]:
        start = time.perf_counter()
        return self._run_rows(batch[0].call, *rows, **run_options(batch)), time.perf_counter() - start

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        try:
            result, seconds = await loop.run_in_executor(self._executor, self._timed, batch, stack_rows(batch))
            answers = list(split_rows(batch, result.arrays))
        except Exception as err:  # delivered to each waiting request, mapped to a status there
            if isinstance(err, ModelRefused | DeadlineExceeded) and len(batch) > 1:  # someone's inputs or time: whose?
                for job in batch:
                    await self._run(loop, [job])
                return
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        if self._on_batch:
            self._on_batch(
                BatchStats(label(batch[0].call, batch[0].model), sum(j.n for j in batch), len(batch), seconds)
            )
        for job, arrays in answers:
            if not job.future.done():
                job.future.set_result((arrays, result.device, result.version))
