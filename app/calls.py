"""One operation of one model as the engine runs it, TensorFlow-free: which outputs
(`of`) in which inputs or variables (`wrt`), the order of its row arrays, and the names and shapes
of what the engine returns. The service builds a `Call` from a request and a model's card
(`app.catalog.Card`), the IPC carries it (`app.ipc.messages.Compute`), the scheduler reads
whether it stacks, and the engine (`app.engine.signatures`) traces one function per call.

Rows: for a model whose examples are independent (`card.batch`), every array's leading axis is
the batch, and concurrent requests stack along it. Otherwise a request is one row: every array
gets a leading axis of 1 that the engine takes off before calling the model, and adds back.
A batch model's shared inputs (`card.shared`) are repeated for every row. Products (K cotangents
or tangents) sit after the row axis: (N, K, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from app.catalog import VARIABLES, Card, Tensor
from app.errors import InvalidInput, UndefinedGradient

PREDICT = "predict"
JACOBIAN = "jacobian"
VJP = "vjp"
JVP = "jvp"
HESSIAN = "hessian"
HVP = "hvp"
OPERATIONS = (PREDICT, JACOBIAN, VJP, JVP, HESSIAN, HVP)
WITH_K = (VJP, JVP, HVP)  # the operations with K products per row
SECOND_ORDER = (HESSIAN, HVP)
SEP = "|"  # between the parts of an engine output's name: TensorFlow names never hold it

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Call:
    op: str
    wrt: tuple[str, ...] = ()  # inputs, and VARIABLES for every trainable variable
    of: tuple[str, ...] = ()  # outputs
    sum_batch: bool = False  # vjp: summed over the rows, in the engine (no per-example gradients)
    stack: bool = True  # its rows may be stacked with other requests' (examples are independent)
    single: bool = False  # vjp with one cotangent per row (K = 1): plain reverse passes, no loop
    dtype: str = ""  # the floating dtype it computes in, for a model that offers several ("": its signature's)
    # Trainable variables whose values the request gives (its last arrays, whole, no row axis);
    # the others are its version's (0: the newest when the engine takes the request in).
    variables: tuple[str, ...] = ()
    version: int = 0
    # hvp: the input its tangents are in, when not wrt's: the mixed second derivative
    # ∂/∂wrt (J_along · t) ("": wrt's own, the Hessian's product).
    along: str = ""
    # What the engine returns: `row_bytes` per row and `fixed_bytes` whatever the rows (a sum
    # over the batch), in `arrays` arrays. Stacking and the answer's shared memory are sized by them.
    row_bytes: int = 0
    fixed_bytes: int = 0
    arrays: int = 0

    def output_bytes(self, rows: int) -> int:
        return self.fixed_bytes + rows * self.row_bytes

    @property
    def key(self) -> tuple[str, tuple[str, ...], tuple[str, ...], bool, bool, str, str]:
        """What the engine traces a function for (the variables' values are its arguments: any
        version, and any values a request gives, use the same function)."""
        return self.op, self.wrt, self.of, self.sum_batch, self.single, self.dtype, self.along

    def inputs_wrt(self) -> tuple[str, ...]:
        return tuple(w for w in self.wrt if w != VARIABLES)

    def product_names(self) -> tuple[str, ...]:
        """The products' row arrays after the model's inputs: a cotangent per output for vjp, a
        tangent per input for jvp and hvp."""
        if self.op == VJP:
            return self.of
        if self.op == HVP and self.along:
            return (self.along,)
        if self.op in (JVP, HVP):
            return self.inputs_wrt()
        return ()


def name(*parts: str) -> str:
    """An engine output's name: ("jacobian", "y", "x") -> "jacobian|y|x"."""
    return SEP.join(parts)


def row_shape(card: Card, t: Tensor, shape: tuple[int, ...] | None = None) -> tuple[int | None, ...]:
    """A tensor's shape per row: without the batch axis for a batch model (but for its shared
    inputs, which have none), whole otherwise."""
    dims = t.shape if shape is None else shape
    return tuple(dims[1:]) if row_axis(card, t) else tuple(dims)


def row_axis(card: Card, t: Tensor) -> bool:
    """Whether a request's array for `t` has the batch axis (a batch model's, but its shared inputs)."""
    return card.batch and t.name not in card.shared


def row_symbols(card: Card, t: Tensor) -> tuple[str, ...]:
    """The names of a tensor's sizes per row ("" where it names none), as `row_shape`'s."""
    symbols = t.symbols or ("",) * len(t.shape)
    return tuple(symbols[1:]) if row_axis(card, t) else tuple(symbols)


def as_rows(card: Card, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A request's inputs by name as the engine's rows, in the card's order: a batch model's as
    they are, its shared inputs repeated for every example (a view); a one-row model's with a
    leading axis of 1."""
    if not card.batch:
        return [arrays[t.name][None] for t in card.inputs]
    n = next(len(arrays[t.name]) for t in card.inputs if t.name not in card.shared)
    return [
        np.broadcast_to(arrays[t.name], (n, *arrays[t.name].shape)) if t.name in card.shared else arrays[t.name]
        for t in card.inputs
    ]


def output_shapes(
    card: Card, call: Call, rows: int, K: int, inputs: dict[str, Shape], outputs: dict[str, Shape]
) -> dict[str, Shape]:
    """What the engine returns, by name, for `rows` rows with K products each: `inputs` and
    `outputs` are the per-row shapes of the model's tensors (from the request, and the signature)."""
    variables = {v.name: tuple(int(d) for d in v.shape if d is not None) for v in card.variables}
    wrt = {w: inputs[w] for w in call.inputs_wrt()}
    if VARIABLES in call.wrt:
        wrt.update(variables)
    shapes: dict[str, Shape] = {name("outputs", o): (rows, *s) for o, s in outputs.items()}
    for o in call.of:
        o_row = outputs[o]
        for w, w_row in wrt.items():
            if call.op == JACOBIAN:
                shapes[name(JACOBIAN, o, w)] = (rows, *o_row, *w_row)
            elif call.op == HESSIAN:
                shapes[name(HESSIAN, o, w)] = (rows, *o_row, *w_row, *w_row)
            elif call.op == HVP:
                shapes[name(HVP, o, w)] = (rows, K, *o_row, *w_row)
        if call.op == JVP:
            shapes[name(JVP, o)] = (rows, K, *o_row)
    if call.op == VJP:
        lead = (K,) if call.sum_batch else (rows, K)
        for w, w_row in wrt.items():
            shapes[name(VJP, w)] = (*lead, *w_row)
    return shapes


def sized(
    card: Card, call: Call, K: int, inputs: dict[str, Shape], outputs: dict[str, Shape]
) -> tuple[Call, tuple[int, int]]:
    """The call with what the engine will return per row and fixed (a vjp summed over the rows
    has no row axis): bytes and how many arrays; and how many numbers, per row and fixed. The same
    for every request of one shape: worked out once (a small request's path is short)."""
    key = (card.inputs, card.outputs, card.variables, call, K, *inputs.items(), None, *outputs.items())
    found = _SIZED.get(key)
    if found is None:
        if len(_SIZED) >= _SIZED_MAX:
            _SIZED.clear()
        found = _SIZED[key] = _sizes(card, call, K, inputs, outputs)
    return found


_SIZED: dict[tuple[object, ...], tuple[Call, tuple[int, int]]] = {}
_SIZED_MAX = 4096


def _sizes(
    card: Card, call: Call, K: int, inputs: dict[str, Shape], outputs: dict[str, Shape]
) -> tuple[Call, tuple[int, int]]:
    shapes = output_shapes(card, call, 1, K, inputs, outputs)
    sizes = itemsizes(card, shapes, call.dtype)
    counts = {k: math.prod(s) for k, s in shapes.items()}
    fixed = {k for k in counts if call.sum_batch and k.startswith(VJP)}
    row_bytes = sum(n * sizes[k] for k, n in counts.items() if k not in fixed)
    fixed_bytes = sum(n * sizes[k] for k, n in counts.items() if k in fixed)
    elements = (sum(n for k, n in counts.items() if k not in fixed), sum(counts[k] for k in fixed))
    return replace(call, row_bytes=row_bytes, fixed_bytes=fixed_bytes, arrays=len(shapes)), elements


def itemsizes(card: Card, shapes: dict[str, Shape], dtype: str = "") -> dict[str, int]:
    """Bytes per number of each engine output: an output's dtype, a derivative in its source's
    (the call's `dtype` for every floating one, when the model offers several)."""
    tensors = card.inputs + card.outputs + card.variables
    size = {t.name: _itemsize(dtype if dtype and t.floating else t.dtype) for t in tensors}
    found = {}
    for key in shapes:
        parts = key.split(SEP)
        source = parts[1] if parts[0] in ("outputs", VJP, JVP) else parts[-1]
        found[key] = size.get(source, 4)
    return found


_ITEMSIZES = {d: np.dtype(d).itemsize for d in ("float16", "float32", "float64", "int32", "int64")}


def _itemsize(dtype: str) -> int:
    return _ITEMSIZES.get(dtype) or np.dtype(dtype).itemsize


def _fail(loc: Sequence[str | int], msg: str) -> InvalidInput:
    return InvalidInput(msg, [{"loc": list(loc), "msg": msg}])


def choose_wrt(card: Card, op: str, wrt: Sequence[str] | None, default: Sequence[str] | None = None) -> tuple[str, ...]:
    """What to differentiate in: named inputs (floating) and VARIABLES."""
    if wrt is None:
        chosen = tuple(default if default is not None else card.differentiable)
    else:
        chosen = tuple(dict.fromkeys(wrt))
    if not chosen:
        raise _fail(["wrt"], f"wrt is empty; choose from {_choices(card)}")
    dtypes = {t.name: t.dtype for t in card.inputs}
    for w in chosen:
        if w == VARIABLES and card.variables:
            continue
        if w in dtypes and w not in card.differentiable:
            raise _fail(
                ["wrt"], f"{w} is {dtypes[w]}: an integer input is not differentiable; choose from {_choices(card)}"
            )
        if w not in card.differentiable:
            raise _fail(["wrt"], f"{w!r} is not an input of {card.name!r}; choose from {_choices(card)}")
    if op in SECOND_ORDER and (len(chosen) != 1 or chosen[0] == VARIABLES):
        raise _fail(
            ["wrt"], f"{op} takes exactly one input in wrt (not {VARIABLES!r}); choose from {card.differentiable}"
        )
    return chosen


def _choices(card: Card) -> list[str]:
    return [*card.differentiable, *([VARIABLES] if card.variables else [])]


def choose_of(card: Card, of: Sequence[str] | None, wrt: tuple[str, ...]) -> tuple[str, ...]:
    """Which outputs: named floating outputs, each with a gradient defined in every wrt. By
    default, every floating output whose gradients are defined."""
    floating = [t.name for t in card.outputs if t.floating]
    if of is None:
        chosen = tuple(o for o in floating if all(card.gradient_defined(o, w) for w in wrt))
        if not chosen:
            raise _undefined(card, floating[0] if floating else "", wrt)
        return chosen
    chosen = tuple(dict.fromkeys(of))
    names = {t.name: t for t in card.outputs}
    for o in chosen:
        if o not in names:
            raise _fail(["of"], f"{o!r} is not an output of {card.name!r}; its floating outputs are {floating}")
        if not names[o].floating:
            raise _fail(["of"], f"output {o} is {names[o].dtype}: not differentiable; choose from {floating}")
        if not all(card.gradient_defined(o, w) for w in wrt):
            raise _undefined(card, o, wrt)
    if not chosen:
        raise _fail(["of"], f"of is empty; choose from {floating}")
    return chosen


def _undefined(card: Card, o: str, wrt: tuple[str, ...]) -> UndefinedGradient:
    bad = {w: op for w, op in card.undefined.get(o, {}).items() if w in wrt}
    if not bad:
        return UndefinedGradient(f"Model {card.name!r} has no floating output to differentiate", [])
    pairs = "; ".join(f"∂{o}/∂{w} passes through {op}" for w, op in bad.items())
    msg = (
        f"TensorFlow defines no gradient for an op on this path of {card.name!r}: {pairs} "
        "(found when the model loaded). Ask for other outputs (of) or inputs (wrt)."
    )
    return UndefinedGradient(msg, [{"loc": ["of"], "msg": msg}])


@dataclass(frozen=True)
class Computed:
    """What a submit returns: the rows' outputs, the device, and the hand-back of their memory
    claim, to call once the answer has been sent (or dropped)."""

    arrays: dict[str, np.ndarray]
    device: str
    release: Callable[[], None]
    version: int = 0  # of the model's variables it ran on


def default_call(card: Card, op: str) -> Call:
    """The call a request naming no wrt or of makes (its products' inputs or outputs aside)."""
    wrt = choose_wrt(card, op, None) if op != PREDICT else ()
    of = choose_of(card, None, wrt) if op != PREDICT else ()
    return Call(op, wrt, of, stack=card.batch, dtype=_default_dtype(card))


def _default_dtype(card: Card) -> str:
    return card.dtypes[0] if card.dtypes else ""


def example_call(card: Card, op: str) -> Call:
    """The default call, or for a second derivative of a model with several inputs, the first's:
    what warm-up, calibration and the docs' examples run."""
    try:
        return default_call(card, op)
    except InvalidInput:
        if op not in SECOND_ORDER or not card.differentiable:
            raise
        wrt = (card.differentiable[0],)
        return Call(op, wrt, choose_of(card, None, wrt), stack=card.batch, dtype=_default_dtype(card))
