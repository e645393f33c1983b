"""The served operations, one description each, over the kernels of `app.ops`: what a request
holds, what it may get back, how its size is checked and how it is documented. The native routes,
their OpenAPI entries, the npz members, the Open Inference Protocol's models and the service's
size checks are all derived from these objects, for every registered model. No web, no TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app import ops


@dataclass(frozen=True)
class Endpoint:
    name: str  # the path (/jacobian) and the Open Inference Protocol's model name
    members: tuple[str, ...]  # the request's arrays: JSON fields, npz members, V2 inputs
    outputs: tuple[str, ...]  # every output it can send, in order
    defaults: tuple[str, ...]  # sent when a V2 request names none
    what: str  # the answer's name in size messages
    hint: str  # how to make a too-big answer smaller
    summary: str  # docs; "{formula}" is the model's
    description: str
    products: str | None = None  # ops.VJP / ops.JVP: K products per state along U or V
    takes_wrt: bool = False  # the Jacobian, in X and/or Y

    def kernel(self, wrt: Sequence[str] = ("X",)) -> str:
        """The engine kernel (`app.ops.OPERATIONS`) that computes this request."""
        if not self.takes_wrt:
            return self.name
        want_x, want_y = "X" in wrt, "Y" in wrt
        return ops.JACOBIAN_XY if want_x and want_y else ops.JACOBIAN_Y if want_y else ops.JACOBIAN

    def output_rank(self, name: str) -> int:
        """Dimensions of an output in its batch form (B first; K before B for the products)."""
        kernels = [self.kernel(w) for w in (("X",), ("Y",))]
        return next(len(ops.OPERATIONS[k].served[name]) for k in kernels if name in ops.OPERATIONS[k].served)

    def input_rank(self, name: str) -> int:
        """Dimensions of an input in its batch form: Y and U have the states' axis, X and V do not."""
        shape = ops.OPERATIONS[self.kernel()].inputs[name]
        return len(shape) - (0 if name in PER_STATE else 1)

    def path(self, model: str) -> str:
        return f"/{self.name}" if model == ops.BUILTIN else f"/models/{model}/{self.name}"

    def v2_name(self, model: str) -> str:
        return self.name if model == ops.BUILTIN else f"{model}.{self.name}"

    def body_text(self) -> str:
        """'X and Y', 'X, Y and V'."""
        return ", ".join(self.members[:-1]) + " and " + self.members[-1]


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
            takes_wrt=True,
        ),
        Endpoint(
            ops.HESSIAN,
            ("X", "Y"),
            ("W", "H"),
            ("W", "H"),
            "Hessian",
            "; for large X use POST /hvp, which returns Hessian-vector products without forming H",
            "W and the full Hessian of every W_i in X",
            f"`H[i][j][k][l][m] = ∂²W_i/∂X_jk∂X_lm`, shape {ops.shape_text(ops.HESSIAN, 'H')}, by nested "
            "TensorFlow tapes. H grows as B·A³·F²; for large X use /hvp. JSON or npz in and out.",
        ),
        Endpoint(
            ops.HVP,
            ("X", "Y", "V"),
            ("W", "HV"),
            ("W", "HV"),
            "Hessian-vector product",
            _FEWER_STATES,
            "Hessian-vector products along a direction V, without forming H",
            f"`HV[i][j][k] = Σ_lm H[i][j][k][l][m]·V[l][m]`, shape {ops.shape_text(ops.HVP, 'HV')}, by "
            "forward-over-reverse autodiff (a JVP of the Jacobian): costs about one Jacobian.",
        ),
        Endpoint(
            ops.VJP,
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
            products=ops.VJP,
        ),
        Endpoint(
            ops.JVP,
            ("X", "Y", "V"),
            ("W", "JV"),
            ("W", "JV"),
            "Jacobian-vector product",
            ", or fewer states or tangents",
            "Jacobian-vector products J·V along tangents V, without forming J",
            "`JV[..., i] = Σ_jk ∂W_i/∂X_jk·V[..., j, k]` by forward-mode autodiff (ForwardAccumulator): one "
            "forward pass serves all K tangents. `V` is shaped like X (A×F), with an optional leading K axis; "
            "JV is shaped like W (A, or B×A) with that K axis.",
            products=ops.JVP,
        ),
    )
}


@dataclass(frozen=True)
class Served:
    """One endpoint of one model: what a route or a V2 model serves."""

    endpoint: Endpoint
    model: ops.Model


def served() -> list[Served]:
    """Every endpoint of every registered model, the built-in model's first."""
    return [Served(e, m) for m in ops.MODELS.values() for e in ENDPOINTS.values()]
