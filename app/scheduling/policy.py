"""The one scheduling policy, for the in-process batcher (`app.scheduling.batcher`) and the engine
process's loop (`app.serve.engine_process`) alike: the cap on requests running or waiting, admission
against the memory budget (oldest first), how long a request may wait for memory, which queued
requests run together, and how a batch's outputs go back to its requests.

Synchronous and with an injectable clock: its drivers decide when to call it, and its tests need
neither TensorFlow, nor sockets, nor an event loop."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from app.calls import Call
from app.errors import MemoryBusy, Overloaded
from app.scheduling.ledger import Ledger


@dataclass(eq=False)  # compared by identity: it holds arrays
class Job:
    """Rows (each with a leading row axis) for one call of one model, and what they may be stacked with."""

    call: Call
    rows: tuple[np.ndarray, ...]
    model: str
    deadline: float = field(default=math.inf, kw_only=True)  # time.monotonic() by which it is answered
    # What it holds of the budget once computed (its answer, as it is sent), when less than its
    # claim: an operation not measured yet claims the whole budget to run, not to be sent.
    claim_after: int = field(default=0, kw_only=True)
    # The version of the model's variables it was taken in on (`call.version`), held while it is
    # in flight so that its values stay, however many pushes come before it runs.
    pinned: Any = field(default=None, kw_only=True)

    @property
    def key(self) -> tuple[Any, ...]:
        # Everything but the row count: rows stack only when every input's other axes agree (K
        # too), on one version of the model's variables.
        call = self.call
        return (self.model, call.key, call.version, self.rows[0].dtype.name, *(r.shape[1:] for r in self.rows))

    @property
    def n(self) -> int:
        return int(self.rows[0].shape[0])


J = TypeVar("J", bound=Job)

STACK_MAX_BYTES = 1 << 18  # answers above this run alone


def stackable(job: Job) -> bool:
    """Small enough to share a call. Big requests run alone: stacking them saves nothing that
    shows (their call is compute-bound) and would lift TensorFlow's peak past their memory
    claims (pfor's intermediates double for a stack of rows; app.service.budget)."""
    return job.call.stack and job.call.output_bytes(job.n) <= STACK_MAX_BYTES


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


def run_options(batch: list[J]) -> dict[str, Any]:
    """The engine's keywords for a batch: its model, and the earliest deadline, by which it stops."""
    return {"model": batch[0].model, "deadline": min(j.deadline for j in batch)}


def split_rows(batch: list[J], arrays: dict[str, np.ndarray]) -> Iterator[tuple[J, dict[str, np.ndarray]]]:
    """Each job with its rows of the batch's outputs (views). Outputs whose row count is not the
    batch's are an engine defect, refused rather than handed out misaligned."""
    if len(batch) == 1:  # its outputs as they are (a summed or one-row answer has no row axis to split)
        yield batch[0], arrays
        return
    rows = sum(j.n for j in batch)
    wrong = {name: a.shape for name, a in arrays.items() if a.shape[:1] != (rows,)}
    if wrong:
        raise RuntimeError(f"the engine returned outputs {wrong} for a batch of {rows} rows")
    start = 0
    for job in batch:
        yield job, {name: a[start : start + job.n] for name, a in arrays.items()}
        start += job.n


def label(call: Call, model: str) -> str:
    """A metric's operation label: `<model>.<operation>`."""
    return f"{model}.{call.op}"


@dataclass(frozen=True)
class BatchStats:
    op: str
    rows: int
    requests: int
    seconds: float  # engine time
    workers: int = 1  # HTTP worker processes whose requests are in the batch


@dataclass(eq=False)
class _Waiting(Generic[J]):
    job: J
    claim: int
    since: float


class Scheduler(Generic[J]):
    """Requests from `offer` until `finished` (ran) and `release` (their memory given back)."""

    def __init__(
        self,
        memory_budget: int,
        max_batch_rows: int,
        max_pending: int,
        memory_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = Ledger(memory_budget)
        self.max_batch_rows, self.max_pending, self.memory_wait_s = max_batch_rows, max_pending, memory_wait_s
        self.clock = clock
        self._waiting: deque[_Waiting[J]] = deque()  # for their claim to fit
        self._queue: deque[J] = deque()  # admitted: their claim is held
        self._held: dict[int, int] = {}  # id(job) → claim, from admission until release
        self._running: set[int] = set()  # id(job) of those taken and neither finished nor given up on

    @property
    def pending(self) -> int:
        """Requests running or waiting, which `max_pending` bounds."""
        return len(self._waiting) + len(self._queue) + len(self._running)

    @property
    def queued(self) -> bool:
        return bool(self._queue)

    @property
    def idle(self) -> bool:
        return self.pending == 0

    def offer(self, job: J, claim: int) -> None:
        """Take a request in, to run once `claim` bytes fit the budget; Overloaded at the cap."""
        if self.pending >= self.max_pending:
            raise Overloaded(
                f"The service is at capacity ({self.max_pending} requests running or waiting); retry shortly"
            )
        self._waiting.append(_Waiting(job, claim, self.clock()))
        self.admit()

    def admit(self) -> list[J]:
        """Move waiting requests to the run queue, oldest first, while their claims fit."""
        admitted = []
        while self._waiting and self.ledger.fits(self._waiting[0].claim):
            entry = self._waiting.popleft()
            self.ledger.claim(entry.claim)
            self._held[id(entry.job)] = entry.claim
            self._queue.append(entry.job)
            admitted.append(entry.job)
        return admitted

    def admitted(self, job: J) -> bool:
        return id(job) in self._held

    def expired(self) -> list[J]:
        """Requests that waited `memory_wait_s` for memory, taken out (oldest first); their
        answer is `memory_busy()`."""
        patience = self.clock() - self.memory_wait_s
        gone = []
        while self._waiting and self._waiting[0].since <= patience:
            gone.append(self._waiting.popleft().job)
        return gone

    def memory_busy(self) -> MemoryBusy:
        return MemoryBusy.waited(self.ledger.budget, self.ledger.claimed, self.memory_wait_s)

    def next_expiry(self) -> float | None:
        """When the oldest waiting request runs out of patience (clock time)."""
        return self._waiting[0].since + self.memory_wait_s if self._waiting else None

    def take(self) -> list[J]:
        """The next batch to run (empty if nothing is admitted), counted as running until `finished`."""
        if not self._queue:
            return []
        batch, self._queue = take_batch(self._queue, self.max_batch_rows)
        self._running.update(id(j) for j in batch)
        return batch

    def finished(self, batch: list[J]) -> None:
        """The batch has run: each job now holds what it needs to be sent (`claim_after`), and
        what that frees is admitted."""
        self._running.difference_update(id(j) for j in batch)
        for job in batch:
            held = self._held.get(id(job))
            if held is not None and 0 < job.claim_after < held:
                self.ledger.release(held - job.claim_after)
                self._held[id(job)] = job.claim_after
        self.admit()

    def release(self, job: J) -> None:
        """Give back the job's claim (answered and sent, failed, or given up on); a job still
        waiting or queued is taken out, and one running no longer counts as pending (its client
        is gone). Then admit whatever now fits."""
        self._running.discard(id(job))
        claim = self._held.pop(id(job), None)
        if claim is not None:
            self.ledger.release(claim)
            self._queue = deque(j for j in self._queue if j is not job)
        else:
            self._waiting = deque(w for w in self._waiting if w.job is not job)
        self.admit()

    def drop(self, which: Callable[[J], bool]) -> list[J]:
        """Take out every waiting or queued job `which` selects (claims stay held: `release` them)."""
        dropped = [w.job for w in self._waiting if which(w.job)] + [j for j in self._queue if which(j)]
        self._waiting = deque(w for w in self._waiting if not which(w.job))
        self._queue = deque(j for j in self._queue if not which(j))
        return dropped
