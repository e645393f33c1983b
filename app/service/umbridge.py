"""UM-Bridge (protocol 1.0) in the service's terms, no web imports: a model's inputs and outputs
as UM-Bridge's lists of flat float64 vectors, in the card's order, and each operation as the
service's own (`Evaluate` a predict, `Gradient` a vjp, `ApplyJacobian` a jvp, `ApplyHessian` an hvp
in `inWrt1` along `vec` in `inWrt2`, mixed when they differ), so it meets the same checks,
limits, batching and engines as every door (`app.http.umbridge_routes` serves it).

A batch model's UM-Bridge model is one example: its per-example shapes, flattened (a shared
input, the built-in's X, whole); a model without a batch axis, its whole shapes. Sizes the
signature leaves open beyond the batch come from `config`: the card's named sizes (the built-in's
`{"A": 2, "F": 4}`), or `config["shapes"]` by tensor name. `config` may also carry `variables`
(values by name) and, for a model that computes in several dtypes, `dtype` (float64 by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app import calls
from app.catalog import Card, Tensor
from app.errors import InvalidInput
from app.service.problem import Problem, problem, ready

PROTOCOL_VERSION = 1.0


@dataclass(frozen=True)
class Shapes:
    """A model's UM-Bridge view under one `config`: each input's and output's shape per example."""

    card: Card
    inputs: list[tuple[int, ...]]
    outputs: list[tuple[int, ...]]

    @property
    def input_sizes(self) -> list[int]:
        return [math.prod(s) for s in self.inputs]

    @property
    def output_sizes(self) -> list[int]:
        return [math.prod(s) for s in self.outputs]


def _config(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InvalidInput(f"config must be an object, not {type(config).__name__}")
    return config


def shapes(card: Card, config: Any) -> Shapes:
    config = _config(config)
    ready(card)
    given = config.get("shapes") or {}
    named = {k: v for k, v in config.items() if isinstance(v, int) and not isinstance(v, bool)}

    def shape(t: Tensor) -> tuple[int, ...]:
        if t.name in given:
            return tuple(int(d) for d in given[t.name])
        dims, symbols = calls.row_shape(card, t), calls.row_symbols(card, t)
        found = []
        for axis, (d, s) in enumerate(zip(dims, symbols, strict=True)):
            if d is None and s in named:
                d = named[s]
            if d is None:
                key = f'"{s}"' if s else f'"shapes": {{"{t.name}": [...]}}'
                where = f"{t.name}'s size at axis {axis} is open in the signature of model {card.name!r}"
                raise InvalidInput(f"{where}: give it in config ({key})")
            found.append(int(d))
        return tuple(found)

    return Shapes(card, [shape(t) for t in card.inputs], [shape(t) for t in card.outputs])


def _index(value: Any, names: Sequence[str], what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
        raise InvalidInput(f"{what} must be an index from 0 to {len(names) - 1} ({', '.join(names)}), not {value!r}")
    return value


def _vector(value: Any, size: int, what: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a list of numbers") from None
    if a.ndim != 1 or a.size != size:
        raise InvalidInput(f"{what} must be a flat list of {size} numbers, not shape {list(a.shape)}")
    return a


@dataclass(frozen=True)
class Request:
    """A UM-Bridge request as the service's `Problem`, and how to read its answer back."""

    problem: Problem
    shapes: Shapes
    key: str  # the answer's array (`outputs|y`, `vjp|x`, ...); "" for Evaluate's every output
    sens: np.ndarray | None = None  # ApplyHessian's, contracted with the answer


def _batched(card: Card, t: Tensor) -> bool:
    return calls.row_axis(card, t)


def _inputs(s: Shapes, given: Any) -> dict[str, np.ndarray]:
    card = s.card
    if not isinstance(given, list) or len(given) != len(card.inputs):
        names = ", ".join(t.name for t in card.inputs)
        raise InvalidInput(f"input must be a list of {len(card.inputs)} vectors ({names})")
    arrays = {}
    for t, shape, value in zip(card.inputs, s.inputs, given, strict=True):
        a = _vector(value, math.prod(shape), f"input {t.name}").reshape(shape)
        if not t.floating:  # UM-Bridge's vectors are floats: an integer input takes whole numbers
            if not np.all(np.mod(a, 1) == 0):
                raise InvalidInput(f"input {t.name} is {t.dtype}: its entries must be whole numbers")
            a = a.astype(np.int64)
        arrays[t.name] = a[None] if _batched(card, t) else a
    return arrays


def request(card: Card, op: str, body: dict[str, Any]) -> Request:
    """Evaluate, Gradient, ApplyJacobian or ApplyHessian of one example, as a Problem."""
    config = _config(body.get("config"))
    s = shapes(card, config)
    inputs = _inputs(s, body.get("input"))
    names_in = [t.name for t in card.inputs]
    names_out = [t.name for t in card.outputs]
    options: dict[str, Any] = {
        "variables": config.get("variables"),
        "dtype": config.get("dtype", "float64") if card.dtypes else None,
    }
    if op == "Evaluate":
        return Request(problem(card, calls.PREDICT, inputs, **options), s, "")
    o = _index(body.get("outWrt"), names_out, "outWrt")
    out = card.outputs[o]
    if op == "Gradient":
        i = _differentiable(card, _index(body.get("inWrt"), names_in, "inWrt"))
        sens = _vector(body.get("sens"), s.output_sizes[o], "sens").reshape(s.outputs[o])
        u = {out.name: sens[None] if _batched(card, out) else sens}
        p = problem(card, calls.VJP, inputs, wrt=[names_in[i]], of=[out.name], cotangents=u, **options)
        return Request(p, s, calls.name(calls.VJP, names_in[i]))
    if op == "ApplyJacobian":
        i = _differentiable(card, _index(body.get("inWrt"), names_in, "inWrt"))
        vec = _vector(body.get("vec"), s.input_sizes[i], "vec").reshape(s.inputs[i])
        t = {names_in[i]: vec[None] if _batched(card, card.inputs[i]) else vec}
        p = problem(card, calls.JVP, inputs, wrt=[names_in[i]], of=[out.name], tangents=t, **options)
        return Request(p, s, calls.name(calls.JVP, out.name))
    if op == "ApplyHessian":
        i1 = _differentiable(card, _index(body.get("inWrt1"), names_in, "inWrt1"))
        i2 = _differentiable(card, _index(body.get("inWrt2"), names_in, "inWrt2"))
        sens = _vector(body.get("sens"), s.output_sizes[o], "sens")
        vec = _vector(body.get("vec"), s.input_sizes[i2], "vec").reshape(s.inputs[i2])
        t = {names_in[i2]: vec[None] if _batched(card, card.inputs[i2]) else vec}
        p = problem(card, calls.HVP, inputs, wrt=[names_in[i1]], of=[out.name], tangents=t, **options)
        return Request(p, s, calls.name(calls.HVP, out.name, names_in[i1]), sens)
    raise InvalidInput(f"Unknown UM-Bridge operation {op!r}")


def _differentiable(card: Card, i: int) -> int:
    t = card.inputs[i]
    if not t.floating:
        raise InvalidInput(f"Input {i} ({t.name}) is {t.dtype}: an integer input is not differentiable")
    return i


def answer(r: Request, arrays: dict[str, np.ndarray]) -> list[Any]:
    """The served answer as UM-Bridge's: every output's vector (Evaluate), or the one vector."""
    card = r.shapes.card
    if not r.key:
        return [_flat(arrays[calls.name("outputs", t.name)], _batched(card, t)) for t in card.outputs]
    kind = r.key.split(calls.SEP)[0]
    a = np.asarray(arrays[r.key], dtype=np.float64)
    one = card.batch and not r.problem.one and a.ndim > 0  # the example's axis, 1 long
    if kind == calls.VJP:
        w = r.key.split(calls.SEP)[1]
        t = next(t for t in card.inputs if t.name == w)
        return _flat(a, _batched(card, t))
    if kind == calls.JVP:
        return _flat(a, card.batch)
    # hvp: (1?, *out, *in1) for the one tangent: Σ_o sens_o · H_o · vec
    h = a[0] if one else a
    sens = r.sens if r.sens is not None else np.ones(1)
    return list(np.tensordot(sens, h.reshape(sens.size, -1), axes=1).tolist())


def _flat(a: np.ndarray, batched: bool) -> list[float]:
    x = np.asarray(a, dtype=np.float64)
    return list((x[0] if batched else x).reshape(-1).tolist())
