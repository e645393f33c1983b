"""The contract of each engine operation, TensorFlow-free: its inputs, the outputs the engine
returns and the ones the service serves, with their shapes. The engine, the service's size
checks, the memory budget, the batcher and the IPC all read their shapes from here.

Shapes are written over symbols: N rows (states) of an A×F problem; a request with one X and
B states is N = B rows. The Hessian of every W_i is the same matrix (W_i = z_i − logsumexp(z),
z linear in X), so the engine returns it once per row (`H_lse`) and `assemble` broadcasts it
over i (a view: nothing is copied until an encoder needs to).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Shape = tuple[str, ...]


@dataclass(frozen=True)
class Operation:
    name: str
    inputs: tuple[str, ...]  # each (N, A, F) but Y, which is (N, F)
    engine_outputs: dict[str, Shape]  # what the engine returns
    served: dict[str, Shape]  # what a client gets (W and the derivatives)

    def shapes(self, rows: int, A: int, F: int, served: bool = False) -> dict[str, tuple[int, ...]]:
        size = {"N": rows, "A": A, "F": F}
        outputs = self.served if served else self.engine_outputs
        return {name: tuple(size[d] for d in shape) for name, shape in outputs.items()}

    def derivative_elements(self, rows: int, A: int, F: int) -> int:
        """Numbers in the served derivatives (what the output limits count; W is not counted)."""
        shapes = self.shapes(rows, A, F, served=True)
        return sum(int(np.prod(s)) for name, s in shapes.items() if name != "W")

    def formula(self) -> str:
        """The count above as text, e.g. 'B·A²·F + B·A·F' (B: states)."""
        return " + ".join(_product(s) for name, s in self.served.items() if name != "W")


def _product(shape: Shape) -> str:
    """('N', 'A', 'A', 'F') -> 'B·A²·F'."""
    powers = {symbol: shape.count(symbol) for symbol in dict.fromkeys(shape)}
    return "·".join(("B" if s == "N" else s) + ("" if k == 1 else "⁰¹²³⁴⁵"[k]) for s, k in powers.items())


JACOBIAN = "jacobian"
JACOBIAN_Y = "jacobian_y"
JACOBIAN_XY = "jacobian_xy"
HESSIAN = "hessian"
HVP = "hvp"

_W: dict[str, Shape] = {"W": ("N", "A")}
_J: dict[str, Shape] = {"J": ("N", "A", "A", "F")}
_J_Y: dict[str, Shape] = {"J_Y": ("N", "A", "F")}

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(JACOBIAN, ("X", "Y"), {**_W, **_J}, {**_W, **_J}),
        Operation(JACOBIAN_Y, ("X", "Y"), {**_W, **_J_Y}, {**_W, **_J_Y}),
        Operation(JACOBIAN_XY, ("X", "Y"), {**_W, **_J, **_J_Y}, {**_W, **_J, **_J_Y}),
        Operation(
            HESSIAN,
            ("X", "Y"),
            {**_W, "H_lse": ("N", "A", "F", "A", "F")},
            {**_W, "H": ("N", "A", "A", "F", "A", "F")},
        ),
        Operation(HVP, ("X", "Y", "V"), {**_W, "HV": ("N", "A", "A", "F")}, {**_W, "HV": ("N", "A", "A", "F")}),
    )
}


def shape_text(op: str, name: str) -> str:
    """A served output's shape for the docs, e.g. 'A×A×F (batch: B×A×A×F)'."""
    per_state = "×".join(OPERATIONS[op].served[name][1:])
    return f"{per_state} (batch: B×{per_state})"


def output_shapes(op: str, rows: int, A: int, F: int) -> dict[str, tuple[int, ...]]:
    """What the engine returns for `rows` problems of size A×F."""
    return OPERATIONS[op].shapes(rows, A, F)


def output_bytes(op: str, rows: int, A: int, F: int, itemsize: int) -> int:
    return sum(int(np.prod(s)) for s in output_shapes(op, rows, A, F).values()) * itemsize


def assemble(op: str, arrays: dict[str, np.ndarray], A: int) -> dict[str, np.ndarray]:
    """The engine's outputs as served: for the Hessian, H_lse broadcast over the A outputs."""
    if op != HESSIAN:
        return arrays
    H_lse = arrays["H_lse"]
    return {"W": arrays["W"], "H": np.broadcast_to(H_lse[:, None], (H_lse.shape[0], A, *H_lse.shape[1:]))}


# XLA keeps its own buffers beside TensorFlow's allocator pool, so a shape served both ways holds
# both; above this output size XLA gains little (bench/measurements.md) and is not used (app.budget).
XLA_MAX_OUTPUT_BYTES = 16 << 20
