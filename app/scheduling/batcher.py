"""Dynamic batching: concurrent requests with the same (operation, dtype, A, F) are stacked
into one TensorFlow call on one dedicated worker thread.

There is no waiting window: a lone request runs at once. Requests that arrive while a batch
is running queue up and all run together in the next call (up to `max_batch_rows` rows),
so batching grows with load by itself. At most `max_pending` requests run or wait; the next
one is refused (Overloaded) instead of queueing without end.

Memory: a request joins the queue only once its claim fits the budget (`app.scheduling.ledger.Ledger`,
first come, first admitted), and holds it until the caller releases it (`Computed.release`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from app.errors import MemoryBusy, Overloaded
from app.ops import Computed, rows_output_bytes
from app.scheduling.ledger import Ledger

RunRows = Callable[..., Any]  # (op, *rows) -> engine.Result


@dataclass
class Job:
    """Rows (each with a leading row axis) for one operation, and what they may be stacked with."""

    op: str
    rows: tuple[np.ndarray, ...]
    key: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        # Everything but the row count: rows stack only when every input's other axes agree (K too).
        self.key = (self.op, self.rows[0].dtype.name, *(r.shape[1:] for r in self.rows))

    @property
    def n(self) -> int:
        return int(self.rows[0].shape[0])


@dataclass(eq=False)  # compared by identity: it holds arrays
class _Job(Job):
    future: asyncio.Future[Any]
    claim: int = 0
    admitted: bool = False  # its claim is held


J = TypeVar("J", bound=Job)


STACK_MAX_BYTES = 1 << 18  # answers above this run alone


def stackable(job: Job) -> bool:
    """Small enough to share a call. Big requests run alone: stacking them saves nothing that
    shows (their call is compute-bound) and would lift TensorFlow's peak past their memory
    claims (pfor's intermediates double for a stack of rows; app.service.budget)."""
    return rows_output_bytes(job.op, job.rows) <= STACK_MAX_BYTES


def take_batch(queue: deque[J], max_rows: int) -> tuple[list[J], deque[J]]:
    """The oldest job and every queued job compatible with it, up to the row bound; and the rest."""
    first = queue.popleft()
    if not stackable(first):
        return [first], queue
    batch, rows, rest = [first], first.n, deque[J]()
    while queue:
        job = queue.popleft()
        if job.key == first.key and rows + job.n <= max_rows and stackable(job):
            batch.append(job)
            rows += job.n
        else:
            rest.append(job)
    return batch, rest


def stack_rows(batch: list[J]) -> tuple[np.ndarray, ...]:
    """One array per input, the jobs' rows one after another."""
    if len(batch) == 1:
        return batch[0].rows
    return tuple(np.concatenate(parts) for parts in zip(*(j.rows for j in batch), strict=True))


@dataclass(frozen=True)
class BatchStats:
    op: str
    rows: int
    requests: int
    seconds: float  # engine time, measured on the worker thread
    workers: int = 1  # HTTP worker processes whose requests are in the batch


class Batcher:
    def __init__(
        self,
        run_rows: RunRows,
        max_batch_rows: int,
        max_pending: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        memory_budget: int = 1 << 62,
        memory_wait_s: float = 10.0,
    ) -> None:
        self._run_rows = run_rows
        self._max_rows = max_batch_rows
        self._max_pending = max_pending
        self._on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._waiting: deque[_Job] = deque()  # for their memory claim to fit
        self.ledger = Ledger(memory_budget)
        self._memory_wait_s = memory_wait_s
        self._wakeup = asyncio.Event()
        self._pending = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tensorflow")
        self._task: asyncio.Task[None] | None = None
        self.batches_run = 0  # engine calls made, for metrics and for tests that work was refused

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued or running, then stop the worker."""
        while self._queue or self._waiting or self._pending:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, op: str, *rows: np.ndarray, claim: int = 0) -> Computed:
        """Queue rows (each with a leading row axis) for `op`, once `claim` bytes fit the budget;
        returns their outputs, holding the claim until `release` is called."""
        if self._pending >= self._max_pending:
            raise Overloaded(
                f"The service is at capacity ({self._max_pending} requests running or waiting); retry shortly"
            )
        self._pending += 1
        job = _Job(op, rows, asyncio.get_running_loop().create_future(), claim)
        self._waiting.append(job)
        self._admit()
        if not job.admitted:
            asyncio.get_running_loop().call_later(self._memory_wait_s, self._waited_too_long, job)
        try:
            result = await job.future
        except BaseException:
            self._release(job)
            raise
        finally:
            self._pending -= 1
        return Computed(result.arrays, result.device, lambda: self._release(job))

    def _admit(self) -> None:
        while self._waiting and self.ledger.fits(self._waiting[0].claim):
            job = self._waiting.popleft()
            if job.future.done():
                continue  # given up while waiting
            self.ledger.claim(job.claim)
            job.admitted = True
            self._queue.append(job)
            self._wakeup.set()

    def _waited_too_long(self, job: _Job) -> None:
        if job in self._waiting and not job.future.done():
            self._waiting.remove(job)
            job.future.set_exception(MemoryBusy.waited(self.ledger.budget, self.ledger.claimed, self._memory_wait_s))

    def _release(self, job: _Job) -> None:
        if job.admitted:
            job.admitted = False
            self.ledger.release(job.claim)
        elif job in self._waiting:
            self._waiting.remove(job)
        self._admit()

    def _take_batch(self) -> list[_Job]:
        batch, self._queue = take_batch(self._queue, self._max_rows)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                # A client that gave up (deadline, disconnect) no longer costs work.
                batch = [j for j in self._take_batch() if not j.future.done()]
                if batch:
                    await self._run(loop, batch)

    def _timed(self, op: str, rows: tuple[np.ndarray, ...]) -> tuple[Any, float]:
        start = time.perf_counter()
        return self._run_rows(op, *rows), time.perf_counter() - start

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        stacked = stack_rows(batch)
        try:
            result, seconds = await loop.run_in_executor(self._executor, self._timed, batch[0].op, stacked)
        except Exception as err:  # delivered to each waiting request, mapped to a status there
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        self.batches_run += 1
        if self._on_batch:
            self._on_batch(BatchStats(batch[0].op, sum(j.n for j in batch), len(batch), seconds))
        start = 0
        for job in batch:
            if not job.future.done():
                job.future.set_result(result.slice(start, start + job.n))
            start += job.n
