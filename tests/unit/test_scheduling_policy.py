"""app.scheduling.policy, the one policy both drivers run: without TensorFlow, sockets or an event
loop, with a clock the test moves."""

from __future__ import annotations

import numpy as np
import pytest

from app.catalog import BUILTIN
from app.errors import MemoryBusy, Overloaded
from app.scheduling.policy import Job, Scheduler, split_rows, stack_rows
from tests.support.fakes import jacobian_call


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def job(rows: int = 1, A: int = 2, F: int = 3) -> Job:
    return Job(jacobian_call(A, F), (np.zeros((rows, A, F)), np.zeros((rows, F))), BUILTIN)


def scheduler(clock: Clock, budget: int = 100, max_pending: int = 4, max_rows: int = 8) -> Scheduler[Job]:
    return Scheduler(budget, max_rows, max_pending, memory_wait_s=10.0, clock=clock)


def test_the_pending_cap_counts_waiting_queued_and_running_requests() -> None:
    s = scheduler(Clock(), max_pending=3)
    a, b, c = job(), job(), job()
    s.offer(a, 10)
    s.offer(b, 10)
    assert s.take() == [a, b] and s.pending == 2  # running now
    s.offer(c, 10)
    with pytest.raises(Overloaded, match="3 requests running or waiting"):
        s.offer(job(), 10)
    s.finished([a, b])
    assert s.pending == 1
    s.offer(job(), 10)  # room again


def test_claims_are_admitted_oldest_first_and_only_while_they_fit() -> None:
    s = scheduler(Clock(), budget=100)
    big, small, later = job(), job(), job()
    s.offer(big, 70)
    s.offer(small, 40)  # does not fit beside big
    s.offer(later, 10)  # would fit, but waits behind small: first come, first admitted
    assert s.admitted(big) and not s.admitted(small) and not s.admitted(later)
    assert s.take() == [big]
    s.finished([big])
    assert not s.admitted(small)  # ran, but its claim is held until its answer is sent
    s.release(big)
    assert s.admitted(small) and s.admitted(later) and s.ledger.claimed == 50


def test_alone_even_an_over_budget_claim_runs() -> None:
    s = scheduler(Clock(), budget=100)
    huge = job()
    s.offer(huge, 500)
    assert s.admitted(huge) and s.take() == [huge]


def test_a_request_that_waits_too_long_for_memory_expires_with_memory_busy() -> None:
    clock = Clock()
    s = scheduler(clock, budget=100)
    s.offer(job(), 80)
    waiting = job()
    s.offer(waiting, 50)
    assert s.next_expiry() == 110.0
    clock.now = 109.9
    assert s.expired() == []
    clock.now = 110.0
    assert s.expired() == [waiting] and s.pending == 1
    err = s.memory_busy()
    assert isinstance(err, MemoryBusy) and "hold 80 bytes of the memory budget of 100 bytes" in err.message


def test_release_takes_out_a_request_given_up_on_wherever_it_is() -> None:
    s = scheduler(Clock(), budget=100)
    queued, waiting = job(), job()
    s.offer(queued, 60)
    s.offer(waiting, 60)
    s.release(waiting)  # a client gone while it waited for memory
    assert s.pending == 1 and s.ledger.claimed == 60
    s.release(queued)  # gone before it ran: its claim comes back and it never runs
    assert s.pending == 0 and s.ledger.claimed == 0 and s.take() == []


def test_batches_stack_compatible_requests_up_to_the_row_bound() -> None:
    s = scheduler(Clock(), max_pending=10, max_rows=4)
    a, b, other, c, d = job(2), job(1), job(1, F=5), job(1), job(1)
    for j in (a, b, other, c, d):
        s.offer(j, 0)
    assert s.take() == [a, b, c]  # d would pass 4 rows; other has another F
    assert s.take() == [other]
    assert s.take() == [d]


def test_a_batch_is_split_back_by_rows_and_a_misshapen_answer_refused() -> None:
    a, b = job(2), job(1)
    stacked = stack_rows([a, b])
    assert stacked[0].shape == (3, 2, 3)
    out = {"W": np.arange(3.0)[:, None] * np.ones((3, 2))}
    (ja, wa), (jb, wb) = split_rows([a, b], out)
    assert ja is a and jb is b and wa["W"][:, 0].tolist() == [0.0, 1.0] and wb["W"][:, 0].tolist() == [2.0]
    with pytest.raises(RuntimeError, match="for a batch of 3 rows"):
        list(split_rows([a, b], {"W": np.zeros((2, 2))}))


def test_drop_takes_out_selected_jobs_and_leaves_their_claims_to_release() -> None:
    s = scheduler(Clock(), budget=100)
    mine, theirs = job(), job()
    s.offer(mine, 30)
    s.offer(theirs, 30)
    assert s.drop(lambda j: j is mine) == [mine]
    assert s.pending == 1 and s.ledger.claimed == 60
    s.release(mine)
    assert s.ledger.claimed == 30 and s.take() == [theirs]


def test_a_running_request_given_up_on_no_longer_counts_as_pending() -> None:
    s = scheduler(Clock())
    running = job()
    s.offer(running, 10)
    assert s.take() == [running] and s.pending == 1
    s.release(running)  # its client left (deadline, hang-up) while TensorFlow still runs it
    assert s.pending == 0 and s.ledger.claimed == 0
    s.finished([running])
    assert s.pending == 0
