"""What an endpoint (`app.endpoints`) computes for a model: size checks before work, the memory
claim, the engine call through the batcher, and the shaping of its rows into the answer. No web
imports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.config import Settings
from app.endpoints import Endpoint
from app.errors import DeadlineExceeded, OverMemoryBudget
from app.ops import BUILTIN, OPERATIONS, Computed, assemble
from app.service import budget
from app.service.outputs import Encoding, check_output_size, ensure_finite
from app.service.problems import Problem


class Submits(Protocol):
    """The in-process batcher, or the client of the engine processes."""

    async def submit(self, op: str, *rows: np.ndarray, claim: int = 0, model: str = BUILTIN) -> Computed: ...


@dataclass(frozen=True)
class Answer:
    arrays: dict[str, np.ndarray]
    dtype: str
    device: str
    release: Callable[[], None]  # call once the answer is sent: it hands back the memory claim

    @property
    def meta(self) -> dict[str, str]:
        return {"dtype": self.dtype, "device": self.device}


class Service:
    def __init__(self, settings: Settings, batcher: Submits) -> None:
        self.settings = settings
        self.batcher = batcher

    async def serve(self, endpoint: Endpoint, p: Problem, out: Encoding, model: str = BUILTIN) -> Answer:
        """Check the answer's size against the limits, compute, and shape it as served: W (B, A)
        and the endpoint's derivatives, the B axis dropped when the client sent a single state."""
        op = endpoint.kernel(p.wrt)
        B, A, F = p.shape
        K = p.K or 1
        contract = OPERATIONS[op]
        sizes = f"B={B}, " + (f"K={K}, " if p.K else "") + f"A={A}, F={F}"
        formula = f"{contract.formula()} with {sizes}"
        check_output_size(endpoint.what, contract.derivative_elements(B, A, F, K), formula, out, endpoint.hint)
        done = await self._compute(op, model, p, out)
        arrays = assemble(done.arrays, A)
        if endpoint.products is not None:
            (name,) = (n for n in arrays if n != "W")
            served = {"W": arrays["W"] if p.batched else arrays["W"][0], name: self._products(p, arrays[name])}
            return Answer(served, p.dtype, done.device, done.release)
        return Answer(self._unbatch(p, arrays), p.dtype, done.device, done.release)

    async def _compute(self, op: str, model: str, p: Problem, out: Encoding) -> Computed:
        B, A, F = p.shape
        K = p.K or 1
        claim = budget.estimate(op, B, A, F, np.dtype(p.dtype).itemsize, out.npz, K, model)
        if claim > self.settings.memory_budget_bytes:
            raise OverMemoryBudget(
                f"This request would need about {claim:,} bytes of memory while it runs, more than the "
                f"service's whole memory budget of {self.settings.memory_budget_bytes:,} bytes "
                f"(JACOBIAN_MEMORY_BUDGET_BYTES); send fewer states or a smaller X{out.switch}"
            )
        given = {name: a for name, a in {"X": p.X, "Y": p.Y, "V": p.V, "U": p.U}.items() if a is not None}
        shapes = OPERATIONS[op].input_shapes(B, A, F, K)  # one row per state, as the engine takes them
        rows = tuple(np.broadcast_to(given[name], shape) for name, shape in shapes.items())
        try:
            async with asyncio.timeout(self.settings.deadline_s):  # no extra task, unlike wait_for
                computed = await self.batcher.submit(op, *rows, claim=claim, model=model)
        except TimeoutError:
            raise DeadlineExceeded(
                f"The computation did not finish within {self.settings.deadline_s:g} s; send a smaller request"
            ) from None
        try:
            ensure_finite(computed.arrays)
        except BaseException:
            computed.release()
            raise
        return computed

    @staticmethod
    def _unbatch(p: Problem, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return arrays if p.batched else {k: a[0] for k, a in arrays.items()}

    @staticmethod
    def _products(p: Problem, per_row: np.ndarray) -> np.ndarray:
        """(B, K, ...) rows of products as served: K first when the client sent K, states summed
        with sum_states, and the B axis dropped for one state."""
        out: np.ndarray
        if p.sum_states:
            out = per_row.sum(axis=0)  # (K, ...)
        else:
            out = np.moveaxis(per_row, 1, 0)  # (K, B, ...)
            out = out if p.batched else out[:, 0]
        return out if p.K is not None else out[0]
