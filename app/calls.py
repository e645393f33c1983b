"""One operation of one repository model as the engine runs it, TensorFlow-free: which outputs
(`of`) in which inputs or variables (`wrt`), the order of its row arrays, and the names and shapes
of what the engine returns. The service builds a `Call` from a request and a model's card
(`app.catalog.Card`), the IPC carries it as the operation's name (`encode`), the scheduler reads
whether it stacks, and the engine (`app.engine.signatures`) traces one function per call.

Rows: for a model whose examples are independent (`card.batch`), every array's leading axis is
the batch, and concurrent requests stack along it. Otherwise a request is one row: every array
gets a leading axis of 1 that the engine takes off before calling the model, and adds back.
Products (K cotangents or tangents) sit after the row axis: (N, K, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.catalog import VARIABLES, Card, Tensor

PREDICT = "predict"
JACOBIAN = "jacobian"
VJP = "vjp"
JVP = "jvp"
HESSIAN = "hessian"
HVP = "hvp"
OPERATIONS = (PREDICT, JACOBIAN, VJP, JVP, HESSIAN, HVP)
WITH_K = (VJP, JVP, HVP)  # the operations with K products per row
SECOND_ORDER = (HESSIAN, HVP)
PREFIX = "call|"  # an encoded Call, as the IPC's operation name; the built-in operations have none
SEP = "|"  # between the parts of an engine output's name: TensorFlow names never hold it

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Call:
    op: str
    wrt: tuple[str, ...] = ()  # inputs, and VARIABLES for every trainable variable
    of: tuple[str, ...] = ()  # outputs
    sum_batch: bool = False  # vjp: summed over the rows, in the engine (no per-example gradients)
    stack: bool = True  # its rows may be stacked with other requests' (examples are independent)
    row_bytes: int = 0  # what the engine returns per row: stacking is bounded by it

    @property
    def key(self) -> tuple[str, tuple[str, ...], tuple[str, ...], bool]:
        """What the engine traces a function for."""
        return self.op, self.wrt, self.of, self.sum_batch

    def encode(self) -> str:
        parts = [self.op, ",".join(self.wrt), ",".join(self.of), str(int(self.sum_batch)), str(int(self.stack))]
        return PREFIX + SEP.join([*parts, str(self.row_bytes)])

    @classmethod
    def decode(cls, text: str) -> Call:
        op, wrt, of, sum_batch, stack, row_bytes = text.removeprefix(PREFIX).split(SEP)
        return cls(op, _names(wrt), _names(of), sum_batch == "1", stack == "1", int(row_bytes))

    def inputs_wrt(self) -> tuple[str, ...]:
        return tuple(w for w in self.wrt if w != VARIABLES)

    def product_names(self) -> tuple[str, ...]:
        """The products' row arrays after the model's inputs: a cotangent per output for vjp, a
        tangent per input for jvp and hvp."""
        if self.op == VJP:
            return self.of
        if self.op in (JVP, HVP):
            return self.inputs_wrt()
        return ()


def is_call(op: str) -> bool:
    return op.startswith(PREFIX)


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def name(*parts: str) -> str:
    """An engine output's name: ("jacobian", "y", "x") -> "jacobian|y|x"."""
    return SEP.join(parts)


def row_shape(card: Card, t: Tensor, shape: tuple[int, ...] | None = None) -> tuple[int | None, ...]:
    """A tensor's shape per row: without the batch axis for a batch model, whole otherwise."""
    dims = t.shape if shape is None else shape
    return tuple(dims[1:]) if card.batch else tuple(dims)


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


def output_bytes(shapes: dict[str, Shape], itemsizes: dict[str, int]) -> int:
    """Bytes of the engine's outputs; `itemsizes` by engine output name, 4 when not given."""
    return sum(int(np.prod(s)) * itemsizes.get(k, 4) for k, s in shapes.items())
