"""The original endpoints — /jacobian, /hessian, /hvp, /vjp and /jvp, and their Open Inference
Protocol models — one description each: what a request holds, what it may get back and in what
shapes, how its size is counted and refused, and how it is documented. Each is a front to an
operation of the built-in model (`BUILTIN`, served as any model: `app.service.front`). The native
routes, their OpenAPI entries, the npz members, the V2 models and the size refusals are all
derived from these objects. No web, no TensorFlow."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.catalog import BUILTIN, FORMULA

__all__ = ["BUILTIN", "ENDPOINTS", "FORMULA", "Endpoint"]

Shape = tuple[str, ...]  # over symbols: B states (N rows) of an A×F problem, K products per state


@dataclass(frozen=True)
class Endpoint:
    name: str  # the path (/jacobian), the V2 model's name, and the built-in model's operation
    members: tuple[str, ...]  # the request's arrays: JSON fields, npz members, V2 inputs
    outputs: tuple[str, ...]  # every output it can send, in order
    defaults: tuple[str, ...]  # sent when a V2 request names none
    what: str  # the answer's name in size messages
    hint: str  # how to make a too-big answer smaller
    summary: str  # docs; "{formula}" is the model's
    description: str
    shapes: dict[str, Shape] = field(default_factory=dict)  # each output's, batch form (N: the states)
    inputs: dict[str, Shape] = field(default_factory=dict)  # each member's, as the engine's rows
    products: str | None = None  # "vjp" / "jvp": K products per state along U or V
    takes_wrt: bool = False  # the Jacobian, in X and/or Y

    def computed(self, wrt: Sequence[str] = ("X",)) -> tuple[str, ...]:
        """The outputs a request computes: W and the derivatives, J_Y for a Jacobian in Y."""
        if not self.takes_wrt:
            return self.outputs
        return ("W",) + (("J",) if "X" in wrt else ()) + (("J_Y",) if "Y" in wrt else ())

    def elements(self, wrt: Sequence[str], B: int, A: int, F: int, K: int = 1) -> int:
        """Numbers in the derivatives a request gets (what the output limits count; not W)."""
        size = {"N": B, "A": A, "F": F, "K": K}
        derivatives = [n for n in self.computed(wrt) if n != "W"]
        return sum(math.prod([size[d] for d in self.shapes[n]]) for n in derivatives)

    def formula(self, wrt: Sequence[str] = ("X",)) -> str:
        """The count above as text, e.g. 'B·A²·F + B·A·F' (B: states)."""
        return " + ".join(_product(self.shapes[n]) for n in self.computed(wrt) if n != "W")

    def shape_text(self, name: str) -> str:
        """An output's shape for the docs, e.g. 'A×A×F (batch: B×A×A×F)'."""
        per_state = "×".join(self.shapes[name][1:])
        return f"{per_state} (batch: B×{per_state})"

    def output_rank(self, name: str) -> int:
        """Dimensions of an output in its batch form (B first; K before B for the products)."""
        return len(self.shapes[name])

    def input_rank(self, name: str) -> int:
        """Dimensions of an input in its batch form: Y and U have the states' axis, X and V do not."""
        return len(self.inputs[name]) - (0 if name in PER_STATE else 1)

    def body_text(self) -> str:
        """'X and Y', 'X, Y and V'."""
        return ", ".join(self.members[:-1]) + " and " + self.members[-1]


def _product(shape: Shape) -> str:
    """('N', 'A', 'A', 'F') -> 'B·A²·F'."""
    powers = {symbol: shape.count(symbol) for symbol in dict.fromkeys(shape)}
    return "·".join(("B" if s == "N" else s) + ("" if k == 1 else "⁰¹²³⁴⁵"[k]) for s, k in powers.items())


_W: dict[str, Shape] = {"W": ("N", "A")}
_XY: dict[str, Shape] = {"X": ("N", "A", "F"), "Y": ("N", "F")}


PER_STATE = ("Y", "U")  # inputs with one row per state; X and V are shared by the states
_FEWER_STATES = ", or fewer states per batch"

ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint(
            "jacobian",
            ("X", "Y"),
            ("W", "J", "J_Y"),
            ("W", "J"),
            "Jacobian",
            _FEWER_STATES,
            "W = {formula} and its full Jacobian in X (and optionally Y)",
            "For each output W_i, the gradient ∂W_i/∂X shaped like X: `J[i][j][k] = ∂W_i/∂X_jk`, "
            "computed by TensorFlow autodiff. `Y` may be one state (F) or a batch (B×F). "
            'With `wrt` containing "Y", also `J_Y[i][k] = ∂W_i/∂Y_k`. '
            "JSON or npz in (Content-Type) and out (Accept).",
            {**_W, "J": ("N", "A", "A", "F"), "J_Y": ("N", "A", "F")},
            _XY,
            takes_wrt=True,
        ),
        Endpoint(
            "hessian",
            ("X", "Y"),
            ("W", "H"),
            ("W", "H"),
            "Hessian",
            "; for large X use POST /hvp, which returns Hessian-vector products without forming H",
            "W and the full Hessian of every W_i in X",
            "`H[i][j][k][l][m] = ∂²W_i/∂X_jk∂X_lm`, shape A×A×F×A×F (batch: B×A×A×F×A×F), by nested "
            "TensorFlow tapes. H grows as B·A³·F²; for large X use /hvp. JSON or npz in and out.",
            {**_W, "H": ("N", "A", "A", "F", "A", "F")},
            _XY,
        ),
        Endpoint(
            "hvp",
            ("X", "Y", "V"),
            ("W", "HV"),
            ("W", "HV"),
            "Hessian-vector product",
            _FEWER_STATES,
            "Hessian-vector products along a direction V, without forming H",
            "`HV[i][j][k] = Σ_lm H[i][j][k][l][m]·V[l][m]`, shape A×A×F (batch: B×A×A×F), by "
            "forward-over-reverse autodiff (a JVP of the Jacobian): costs about one Jacobian.",
            {**_W, "HV": ("N", "A", "A", "F")},
            {**_XY, "V": ("N", "A", "F")},
        ),
        Endpoint(
            "vjp",
            ("X", "Y", "U"),
            ("W", "UJ"),
            ("W", "UJ"),
            "vector-Jacobian product",
            ", or fewer states or cotangents",
            "Vector-Jacobian products Σ_i U_i·∂W_i/∂X, without forming J",
            "`UJ[..., j, k] = Σ_i U[..., i]·∂W_i/∂X_jk` by reverse-mode autodiff: one forward pass, K reverse "
            "passes, A·F numbers per state instead of J's A²·F. `U` is shaped like W (A, or B×A), with an optional "
            "leading K axis. `sum_states` (batch only) sums over the states: Σ_b advantage_b·∇_X log π(a_b|s_b), "
            "a policy gradient in one call. For npz bodies, sum_states is a query parameter.",
            {**_W, "UJ": ("N", "K", "A", "F")},
            {**_XY, "U": ("N", "K", "A")},
            products="vjp",
        ),
        Endpoint(
            "jvp",
            ("X", "Y", "V"),
            ("W", "JV"),
            ("W", "JV"),
            "Jacobian-vector product",
            ", or fewer states or tangents",
            "Jacobian-vector products J·V along tangents V, without forming J",
            "`JV[..., i] = Σ_jk ∂W_i/∂X_jk·V[..., j, k]` by forward-mode autodiff (ForwardAccumulator): one "
            "forward pass serves all K tangents. `V` is shaped like X (A×F), with an optional leading K axis; "
            "JV is shaped like W (A, or B×A) with that K axis.",
            {**_W, "JV": ("N", "K", "A")},
            {**_XY, "V": ("N", "K", "A", "F")},
            products="jvp",
        ),
    )
}
