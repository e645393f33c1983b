"""The original endpoints (`app.endpoints`: /jacobian, /hessian, /hvp, /vjp, /jvp and their Open
Inference Protocol models) as a front to the built-in model: a request
(`app.service.seed.PolicyRequest`) renamed into the model's call (`app.service.problem.Problem`),
its answer renamed back (W, J, J_Y, H, HV, UJ, JV), and its size refusals in the endpoints' own
words. The one pipeline (`app.service.dataplane`) does everything else. No web imports."""

from __future__ import annotations

import numpy as np

from app import calls
from app.calls import Call
from app.catalog import Card
from app.endpoints import Endpoint
from app.service.dataplane import Served, Service, Wording
from app.service.outputs import Encoding
from app.service.problem import Problem, sized
from app.service.seed import PolicyRequest

# The model's outputs, as `app.calls` names them, by the endpoints' names.
NAMES = {
    calls.name("outputs", "W"): "W",
    calls.name(calls.JACOBIAN, "W", "X"): "J",
    calls.name(calls.JACOBIAN, "W", "Y"): "J_Y",
    calls.name(calls.HESSIAN, "W", "X"): "H",
    calls.name(calls.HVP, "W", "X"): "HV",
    calls.name(calls.VJP, "X"): "UJ",
    calls.name(calls.JVP, "W"): "JV",
}


def problem(card: Card, e: Endpoint, r: PolicyRequest) -> Problem:
    """The request as the built-in model's call: X repeated for each state (a view), Y's states,
    and U (B, K, A), V (K, A, F) or hvp's one V as its rows."""
    B, A, F = r.shape
    wrt = tuple(w for w in ("X", "Y") if w in r.wrt) if e.takes_wrt else ("X",)
    rows = [np.broadcast_to(r.X, (B, A, F)), r.Y]
    if e.name == calls.VJP:
        assert r.U is not None
        rows.append(r.U)
    elif e.name in (calls.JVP, calls.HVP):
        assert r.V is not None
        V = r.V if e.name == calls.JVP else r.V[None]  # hvp: one direction, K = 1
        rows.append(np.broadcast_to(V, (B, *V.shape)))
    single = e.name == calls.VJP and (r.K or 1) == 1
    call = Call(e.name, wrt, ("W",), r.sum_states, stack=not r.sum_states, single=single, dtype=r.dtype)
    one = not r.batched
    return sized(Problem(card, call, tuple(rows), B, r.K, {"X": (A, F), "Y": (F,)}, {"W": (A,)}, one))


def wording(e: Endpoint, r: PolicyRequest) -> Wording:
    """The size refusals as the endpoints have always said them."""
    B, A, F = r.shape
    K = r.K or 1
    sizes = f"B={B}, " + (f"K={K}, " if r.K else "") + f"A={A}, F={F}"
    elements = e.elements(r.wrt, B, A, F, K)
    formula = f"{e.formula(r.wrt)} with {sizes}"
    return Wording(e.what, elements, formula, e.hint, "send fewer states or a smaller X", NAMES)


async def serve(service: Service, card: Card, e: Endpoint, r: PolicyRequest, out: Encoding) -> Served:
    """Compute an endpoint's request through the one pipeline: W and the endpoint's derivatives,
    in its order, the B axis dropped for a single state; dtype and device beside them."""
    answer = await service.serve(problem(card, e, r), out, wording(e, r))
    named = {NAMES[k]: a for k, a in answer.arrays.items()}
    arrays = {n: named[n] for n in e.outputs if n in named}
    return Served(arrays, {"dtype": answer.meta["dtype"], "device": answer.meta["device"]}, answer.release)
