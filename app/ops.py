"""The contract of each engine operation, TensorFlow-free: its inputs, the outputs the engine
returns and the ones the service serves, with their shapes. The engine, the service's size
checks, the memory budget, the batcher and the IPC all read their shapes from here.

Shapes are written over symbols: N rows (states) of an A×F problem, and K cotangents or tangents
for the derivative products; a request with one X and B states is N = B rows. Every model takes
X (A×F) and a state Y (F) to W (A) (`Model`), so these shapes hold for each. When every W_i has
the same Hessian (the seed's: W_i = z_i − logsumexp(z), z linear in X), the engine returns it
once per row (`H_lse`) and `assemble` broadcasts it over i (a view: nothing is copied until an
encoder needs to). The endpoints built on these kernels are described in `app.endpoints`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Shape = tuple[str, ...]


@dataclass(frozen=True)
class Model:
    """A model served by every operation: W (A) = f(X (A×F), Y (F)), differentiable in X and Y.
    TensorFlow-free: its function is registered with the engine (`app.engine.models.register`),
    which registers this description here too."""

    name: str
    formula: str  # what W is, for the docs, e.g. "log_softmax(X·Y)"
    # Every W_i has the same Hessian in X (true of W = z − g(z) with z linear in X): the engine
    # computes it once per row (`H_lse`) and `assemble` broadcasts it over i.
    shared_hessian: bool = False


BUILTIN = "policy"  # the seed's model, behind the native endpoints at the root
MODELS: dict[str, Model] = {}


def register(model: Model) -> None:
    MODELS[model.name] = model


@dataclass(frozen=True)
class Operation:
    """One engine kernel: its inputs, the outputs the engine returns and those a client gets."""

    name: str
    inputs: dict[str, Shape]  # what the engine takes, per input
    served: dict[str, Shape]  # what a client gets (W and the derivatives)
    shared: dict[str, Shape] | None = None  # what the engine returns for a model with a shared Hessian
    tf_peak: float = 1.0  # TensorFlow's peak process memory, a multiple of the output (app.service.budget)
    xla_peak: float = 1.0  # the same for XLA's own buffers
    products: bool = False  # the peak is a multiple of output and inputs together

    def engine_outputs(self, model: str = BUILTIN) -> dict[str, Shape]:
        return self.shared if self.shared is not None and MODELS[model].shared_hessian else self.served

    def shapes(
        self, rows: int, A: int, F: int, K: int = 1, served: bool = False, model: str = BUILTIN
    ) -> dict[str, tuple[int, ...]]:
        size = {"N": rows, "A": A, "F": F, "K": K}
        outputs = self.served if served else self.engine_outputs(model)
        return {name: tuple(size[d] for d in shape) for name, shape in outputs.items()}

    def input_shapes(self, rows: int, A: int, F: int, K: int = 1) -> dict[str, tuple[int, ...]]:
        size = {"N": rows, "A": A, "F": F, "K": K}
        return {name: tuple(size[d] for d in shape) for name, shape in self.inputs.items()}

    def dims(self, rows: tuple[Any, ...]) -> tuple[int, int, int, int]:
        """(N, A, F, K) of the engine's input arrays for this operation."""
        size: dict[str, int] = {"K": 1}
        for shape, array in zip(self.inputs.values(), rows, strict=True):
            size.update(zip(shape, array.shape, strict=True))
        return size["N"], size["A"], size["F"], size["K"]

    def derivative_elements(self, rows: int, A: int, F: int, K: int = 1) -> int:
        """Numbers in the derivatives the engine returns (what the output limits count; not W)."""
        shapes = self.shapes(rows, A, F, K, served=True)
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
VJP = "vjp"
JVP = "jvp"

_W: dict[str, Shape] = {"W": ("N", "A")}
_J: dict[str, Shape] = {"J": ("N", "A", "A", "F")}
_J_Y: dict[str, Shape] = {"J_Y": ("N", "A", "F")}

_XY: dict[str, Shape] = {"X": ("N", "A", "F"), "Y": ("N", "F")}

# The peak factors are measured, not guessed: `python -m bench.memory` (bench/results.md). A
# shape served by XLA (outputs up to XLA_MAX_OUTPUT_BYTES) holds XLA's buffers beside TensorFlow's.
OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(JACOBIAN, _XY, {**_W, **_J}, tf_peak=1.2, xla_peak=2.4),
        Operation(JACOBIAN_Y, _XY, {**_W, **_J_Y}, tf_peak=1.2, xla_peak=2.4),
        Operation(JACOBIAN_XY, _XY, {**_W, **_J, **_J_Y}, tf_peak=1.2, xla_peak=2.4),
        Operation(
            HESSIAN,
            _XY,
            {**_W, "H": ("N", "A", "A", "F", "A", "F")},
            shared={**_W, "H_lse": ("N", "A", "F", "A", "F")},
            tf_peak=1.6,
            xla_peak=2.0,
        ),
        Operation(HVP, {**_XY, "V": ("N", "A", "F")}, {**_W, "HV": ("N", "A", "A", "F")}, tf_peak=4.4, xla_peak=8.0),
        # Products with K cotangents U (shaped like W) or tangents V (shaped like X) per state.
        Operation(VJP, {**_XY, "U": ("N", "K", "A")}, {**_W, "UJ": ("N", "K", "A", "F")}, products=True),
        Operation(JVP, {**_XY, "V": ("N", "K", "A", "F")}, {**_W, "JV": ("N", "K", "A")}, products=True),
    )
}


def shape_text(op: str, name: str) -> str:
    """A served output's shape for the docs, e.g. 'A×A×F (batch: B×A×A×F)'."""
    per_state = "×".join(OPERATIONS[op].served[name][1:])
    return f"{per_state} (batch: B×{per_state})"


def output_shapes(op: str, rows: int, A: int, F: int, K: int = 1, model: str = BUILTIN) -> dict[str, tuple[int, ...]]:
    """What the engine returns for `rows` problems of size A×F (with K products per row)."""
    return OPERATIONS[op].shapes(rows, A, F, K, model=model)


def output_bytes(op: str, rows: int, A: int, F: int, itemsize: int, K: int = 1, model: str = BUILTIN) -> int:
    return sum(int(np.prod(s)) for s in output_shapes(op, rows, A, F, K, model).values()) * itemsize


def rows_output_bytes(op: str, rows: tuple[Any, ...], model: str = BUILTIN) -> int:
    """Bytes the engine returns for these input arrays."""
    n, A, F, K = OPERATIONS[op].dims(rows)
    return output_bytes(op, n, A, F, rows[0].itemsize, K, model)


def assemble(arrays: dict[str, np.ndarray], A: int) -> dict[str, np.ndarray]:
    """The engine's outputs as served: a shared Hessian (H_lse) broadcast over the A outputs."""
    if "H_lse" not in arrays:
        return arrays
    H_lse = arrays["H_lse"]
    return {"W": arrays["W"], "H": np.broadcast_to(H_lse[:, None], (H_lse.shape[0], A, *H_lse.shape[1:]))}


# XLA keeps its own buffers beside TensorFlow's allocator pool, so a shape served both ways holds
# both; above this output size XLA gains little (bench/measurements.md) and is not used (app.service.budget).
XLA_MAX_OUTPUT_BYTES = 16 << 20


@dataclass(frozen=True)
class Computed:
    """What a submit returns: the rows' outputs, the device, and the hand-back of their memory
    claim, to call once the answer has been sent (or dropped)."""

    arrays: dict[str, np.ndarray]
    device: str
    release: Callable[[], None]


register(Model(BUILTIN, "log_softmax(X·Y)", shared_hessian=True))
