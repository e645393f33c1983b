"""What a model is, TensorFlow-free: its card (name, version, state, its signature's inputs and
outputs, its trainable variables, which inputs are differentiable and which output/input pairs
have a defined gradient), the built-in model's (`BUILTIN_CARD`) and the repository's alike. The
engine writes the repository's when it loads it (`app.engine.repository`); every other layer
reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FLOATING = ("float16", "bfloat16", "float32", "float64")
VARIABLES = "variables"  # the `wrt` name of a model's trainable variables


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # NumPy's name: float32, int32, ...
    shape: tuple[int | None, ...]  # None where the size is not fixed
    # Names of its open sizes shared with other tensors ("A", "F"; "" for none): a built-in model
    # says them, so that the inputs are checked against each other and the outputs' sizes known.
    symbols: tuple[str, ...] = ()

    @property
    def floating(self) -> bool:
        return self.dtype in FLOATING


@dataclass(frozen=True)
class Card:
    name: str
    version: int
    state: Literal["ready", "failed"]
    reason: str | None = None  # why it failed to load
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()
    variables: tuple[Tensor, ...] = ()
    # Examples are independent along a shared leading dimension of unknown size: Jacobians are
    # per example. False when the signature has none, or config.json says {"batch": false}.
    batch: bool = False
    # Inputs of a batch model without the batch axis: one for every example (the built-in's X).
    shared: tuple[str, ...] = ()
    # A request may send one example without the batch axis, and is answered without it.
    optional_batch: bool = False
    # The floating dtypes it computes in, chosen per request (the built-in's); () for its signature's.
    dtypes: tuple[str, ...] = ()
    # output -> input (or VARIABLES) -> None when its gradient is defined, else the op without one.
    undefined: dict[str, dict[str, str]] = field(default_factory=dict)
    # operation -> TensorFlow's measured peak while it runs, a multiple of its inputs and outputs
    # (calibrated on first use: `app.engine.derivatives.Engine.calibrate`), what the memory budget charges.
    peak_factors: dict[str, float] = field(default_factory=dict)
    # The versions of its variables' values kept (`version` is the newest: the default).
    versions: tuple[int, ...] = ()
    # An op that uses a variable other than by reading it: its variables take no values per request.
    variables_fixed_by: str = ""

    @property
    def differentiable(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs if t.floating)

    def gradient_defined(self, output: str, wrt: str) -> bool:
        return wrt not in self.undefined.get(output, {})


def variables_fixed(card: Card) -> str:
    """Why the model's variables take no values ("" when they do)."""
    if not card.variables:
        return f"Model {card.name!r} has no trainable variables to give values to"
    if card.variables_fixed_by:
        return (
            f"Model {card.name!r} uses its variables through {card.variables_fixed_by}, not only by reading "
            "them: it is served at its stored values only"
        )
    return ""


def card_from_dict(d: dict[str, Any]) -> Card:
    """A card as the engines report it (`dataclasses.asdict`, through JSON) back into a Card."""

    def tensors(rows: list[dict[str, Any]]) -> tuple[Tensor, ...]:
        return tuple(Tensor(r["name"], r["dtype"], tuple(r["shape"]), tuple(r.get("symbols", ()))) for r in rows)

    keys = ("name", "version", "state", "reason", "batch", "optional_batch", "undefined", "peak_factors")
    fields = {k: d[k] for k in (*keys, "variables_fixed_by") if k in d}
    return Card(
        **fields,
        inputs=tensors(d["inputs"]),
        outputs=tensors(d["outputs"]),
        variables=tensors(d["variables"]),
        shared=tuple(d.get("shared", ())),
        dtypes=tuple(d.get("dtypes", ())),
        versions=tuple(d.get("versions", ())),
    )


BUILTIN = "policy"  # the seed's model, W = log_softmax(X·y) per state (`app.engine.builtin`)
FORMULA = "log_softmax(X·Y)"
# X is shared by the states (the batch is the states, Y: B×F), a request may send one state
# (Y: F), and it computes in float32 or float64, as the request asks.
BUILTIN_CARD = Card(
    BUILTIN,
    1,
    "ready",
    inputs=(Tensor("X", "float32", (None, None), ("A", "F")), Tensor("Y", "float32", (None, None), ("B", "F"))),
    outputs=(Tensor("W", "float32", (None, None), ("B", "A")),),
    batch=True,
    shared=("X",),
    optional_batch=True,
    dtypes=("float32", "float64"),
    versions=(1,),
)
