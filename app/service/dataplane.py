"""What a request to any model computes, once it is a `Problem` (`app.service.problem`): the size
limits before any work, the memory claim (`app.service.budget`), the engine call through the
batcher under the deadline, the finiteness of the result, and the answer shaped as served. Every
door — the models' routes, the original endpoints (`app.service.front`), the Open Inference
Protocol — ends here, as KServe's `DataPlane.infer` does. No web imports, no TensorFlow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from app import calls
from app.calls import Call, Computed
from app.config import Settings
from app.errors import DeadlineExceeded, OverMemoryBudget
from app.service.budget import claim, estimate
from app.service.outputs import Encoding, check_output_size, ensure_finite
from app.service.problem import OUTPUTS, Problem, engine_shapes, open_outputs, sized


class Submits(Protocol):
    """The in-process batcher, or the client of the engine processes."""

    async def submit(
        self, call: Call, *rows: np.ndarray, claim: int = 0, model: str = "", claim_after: int = 0
    ) -> Computed: ...


@dataclass(frozen=True)
class Served:
    arrays: dict[str, np.ndarray]  # as served, flat: "outputs|y", "jacobian|y|x", ...
    meta: dict[str, Any]
    release: Callable[[], None]  # call once the answer is sent: it hands back the memory claim


@dataclass(frozen=True)
class Wording:
    """How the size refusals name a request: the answer (`what`), its derivatives' count and how
    it is made, and how to make it smaller. A front says its own (`app.service.front`)."""

    what: str
    elements: int
    formula: str
    hint: str  # ", or fewer ..." after "Send a smaller request"
    smaller: str  # what to send instead, after the memory budget's refusal
    names: dict[str, str] = field(default_factory=dict)  # the outputs' own names, where they have them


class Service:
    def __init__(self, settings: Settings, batcher: Submits) -> None:
        self.settings = settings
        self.batcher = batcher

    async def serve(self, p: Problem, out: Encoding, wording: Wording | None = None) -> Served:
        """Check the answer's size and memory against the limits, compute, and shape it as served."""
        s = self.settings
        if p.call.op != calls.PREDICT and open_outputs(p.card):
            p = await self._with_output_sizes(p, out)
        w = wording or _wording(p)
        check_output_size(w.what, w.elements, w.formula, out, w.hint)
        estimated = estimate(p, out.npz)
        if estimated > s.memory_budget_bytes:
            raise OverMemoryBudget(
                f"This request would need about {estimated:,} bytes of memory while it runs, more than the "
                f"service's whole memory budget of {s.memory_budget_bytes:,} bytes "
                f"(JACOBIAN_MEMORY_BUDGET_BYTES); {w.smaller}{out.switch}"
            )
        try:
            async with asyncio.timeout(s.deadline_s):  # no extra task, unlike wait_for
                held = claim(p, estimated, s.memory_budget_bytes)
                computed = await self.batcher.submit(
                    p.call, *p.rows, claim=held, model=p.card.name, claim_after=estimated
                )
        except TimeoutError:
            raise DeadlineExceeded(
                f"The computation did not finish within {s.deadline_s:g} s; send a smaller request"
            ) from None
        try:
            ensure_finite({w.names.get(k, k.replace(calls.SEP, "/")): a for k, a in computed.arrays.items()})
            arrays = {k: _served(p, k, a) for k, a in _whole(p, computed.arrays).items()}
        except BaseException:
            computed.release()
            raise
        floating = dict.fromkeys(p.call.dtype or t.dtype for t in p.card.outputs if t.floating)
        version = computed.version or p.card.version  # the one it ran on
        meta = {"model": p.card.name, "version": version, "dtype": ", ".join(floating) or "none"}
        return Served(arrays, {**meta, "device": computed.device}, computed.release)

    async def _with_output_sizes(self, p: Problem, out: Encoding) -> Problem:
        """A signature that leaves an output's size open: a forward pass first shows it, so that the
        derivative's size limits and memory claim count it (one forward pass more for such models)."""
        n_inputs, n_values = len(p.card.inputs), len(p.call.variables)
        call = replace(p.call, op=calls.PREDICT, wrt=(), of=(), sum_batch=False, single=False)
        forward = p.rows[:n_inputs] + p.rows[len(p.rows) - n_values :]
        answer = await self.serve(sized(replace(p, call=call, rows=forward, K=None)), out)
        try:
            found = {k.split(calls.SEP, 1)[1]: a.shape for k, a in answer.arrays.items()}
        finally:
            answer.release()
        rows = {o: tuple(shape[1:]) if p.card.batch and not p.one else tuple(shape) for o, shape in found.items()}
        return sized(replace(p, output_rows=rows))


def _wording(p: Problem) -> Wording:
    shapes = engine_shapes(p)
    derivative = sum(int(np.prod(s)) for k, s in shapes.items() if not k.startswith(OUTPUTS))
    sizes = (f"B={p.batch}, " if p.batch else "") + (f"K={p.K}, " if p.K else "")
    hint = ", or fewer examples, outputs (of) or inputs (wrt)" + (", or fewer products (K)" if p.K else "")
    return Wording(p.call.op, derivative, f"{sizes}model {p.card.name}".strip(", "), hint, hint.removeprefix(", or "))


def _whole(p: Problem, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A Hessian the same for every output comes once per row (`same_hessian`, the built-in's):
    answered as a read-only view over the outputs, not A copies."""
    if p.call.op != calls.HESSIAN:
        return arrays
    shapes = engine_shapes(p)
    return {k: a if a.shape == shapes[k] else np.broadcast_to(a, shapes[k]) for k, a in arrays.items()}


def _served(p: Problem, key: str, a: np.ndarray) -> np.ndarray:
    """An engine output as the client gets it: the row axis of a one-row model (or of one example
    sent without it) dropped, K first when the client sent K, dropped when it did not."""
    kind = key.split(calls.SEP)[0]
    if kind in (calls.VJP, calls.JVP, calls.HVP):
        if kind == calls.VJP and p.call.sum_batch:
            return a if p.K is not None else a[0]  # (K, ...)
        a = np.moveaxis(a, 1, 0)  # (K, N, ...)
        if not p.card.batch or p.one:
            a = a[:, 0]
        return a if p.K is not None else a[0]
    return a if p.card.batch and not p.one else a[0]


def nested(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """{"outputs|y": a, "jacobian|y|x": b} -> {"outputs": {"y": a}, "jacobian": {"y": {"x": b}}}."""
    tree: dict[str, Any] = {}
    for key, a in arrays.items():
        *path, leaf = key.split(calls.SEP)
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = a
    return tree
