"""Request and response models: the JSON contract, and what the OpenAPI page shows. The answers'
shapes are read from the endpoints' descriptions (`app.endpoints`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from app.config import DType
from app.endpoints import ENDPOINTS

# strict: no "1.5" strings or booleans; allow_inf_nan=False: no NaN/Infinity tokens, and
# literals that overflow float64 (1e400) parse to inf and are refused too.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
# Non-empty: the schema says so, so generated clients (and schemathesis) know it.
Vector = Annotated[list[Number], Field(min_length=1)]
Matrix = Annotated[list[Vector], Field(min_length=1)]


def _rank_of_y(value: Any) -> str:
    # Pick the branch from the first entry so errors name one shape, not both.
    return "batch" if isinstance(value, list) and value and isinstance(value[0], list) else "state"


def _depth(value: Any) -> str:
    depth = 0
    while isinstance(value, list) and value:
        depth, value = depth + 1, value[0]
    return {1: "vector", 2: "matrix", 3: "tensor3"}.get(depth, "vector")


# The tags (app.service.codec.UNION_TAGS) only route validation; codec strips them from error locations.
States = Annotated[Annotated[Vector, Tag("state")] | Annotated[Matrix, Tag("batch")], Discriminator(_rank_of_y)]
Tensor3 = Annotated[list[Matrix], Field(min_length=1)]
# Shaped like W (A, or B×A), with an optional leading K axis.
Cotangents = Annotated[
    Annotated[Vector, Tag("vector")] | Annotated[Matrix, Tag("matrix")] | Annotated[Tensor3, Tag("tensor3")],
    Discriminator(_depth),
]
# Shaped like X (A×F), with an optional leading K axis.
Tangents = Annotated[Annotated[Matrix, Tag("matrix")] | Annotated[Tensor3, Tag("tensor3")], Discriminator(_depth)]

SEED_X: Any = [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]
SEED_Y: Any = [1.0, 2.0, 3.0, 4.0]
SEED_V: Any = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]

_X_DOC = "The A×F matrix X: A rows (outputs) of F numbers each, rectangular, A ≥ 1, F ≥ 1."
_Y_DOC = "One state: F numbers; or a batch of B states: B×F numbers."
_DTYPE_DOC = "Precision of the computation and the result. Default float32 (configurable)."


class _Problem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    X: Matrix = Field(description=_X_DOC)
    Y: States = Field(description=_Y_DOC)
    dtype: DType | None = Field(None, description=_DTYPE_DOC)


class JacobianRequest(_Problem):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"X": SEED_X, "Y": SEED_Y}]})

    wrt: list[Literal["X", "Y"]] = Field(
        default=["X"],
        min_length=1,
        description='Differentiate with respect to "X" (J) and/or "Y" (adds J_Y).',
    )


class HessianRequest(_Problem):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"X": SEED_X, "Y": SEED_Y}]})


class HvpRequest(_Problem):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"X": SEED_X, "Y": SEED_Y, "V": SEED_V}]},
    )

    V: Matrix = Field(description="A direction in X-space, shaped like X (A×F).")


class VjpRequest(_Problem):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"X": SEED_X, "Y": SEED_Y, "U": [1.0, 0.0]}]},
    )

    U: Cotangents = Field(
        description="Cotangents shaped like W: A numbers (batch: B×A), or K×A (batch: K×B×A) for K of them."
    )
    sum_states: bool = Field(
        False, strict=True, description="Batch only: sum UJ over the states (a policy gradient's Σ_b)."
    )


class JvpRequest(_Problem):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"X": SEED_X, "Y": SEED_Y, "V": SEED_V}]},
    )

    V: Tangents = Field(description="Tangents shaped like X (A×F), or K×A×F for K of them.")


Nested = list[Any]
_JACOBIAN = ENDPOINTS["jacobian"]


class _Answer(BaseModel):
    W: Nested = Field(description=f"log_softmax(X·y): {_JACOBIAN.shape_text('W')}.")
    dtype: DType
    device: str = Field(description="The TensorFlow device that computed it, e.g. /device:CPU:0.")


class JacobianResponse(_Answer):
    J: Nested | None = Field(
        None,
        description=f'With wrt "X" (the default): {ENDPOINTS["jacobian"].shape_text("J")}, J[i][j][k] = ∂W_i/∂X_jk.',
    )
    J_Y: Nested | None = Field(
        None, description=f'With wrt "Y": {ENDPOINTS["jacobian"].shape_text("J_Y")}, J_Y[i][k] = ∂W_i/∂Y_k.'
    )


class HessianResponse(_Answer):
    H: Nested = Field(description=f"{ENDPOINTS['hessian'].shape_text('H')}, H[i][j][k][l][m] = ∂²W_i/∂X_jk∂X_lm.")


class HvpResponse(_Answer):
    HV: Nested = Field(description=f"{ENDPOINTS['hvp'].shape_text('HV')}, HV[i][j][k] = Σ_lm H[i][j][k][l][m]·V[l][m].")


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Where in the request, e.g. ['X', 1, 2].")
    msg: str


class ErrorBody(BaseModel):
    """The one shape of every error response."""

    code: str = Field(description="Machine-readable reason, e.g. invalid_input, too_large.")
    message: str = Field(description="What was wrong and how to fix it.")
    details: list[ErrorDetail] = Field(default_factory=list)


class Liveness(BaseModel):
    status: Literal["ok"]


class EngineState(BaseModel):
    index: int
    pid: int | None = Field(description="The engine's process id; null while it is down.")
    state: Literal["ready", "starting", "down"]


class SharedMemory(BaseModel):
    dir: str
    free_bytes: int
    needed_bytes: int = Field(description="The largest answer the limits admit (float64).")
    ok: bool = Field(description="Whether the largest answer fits; if not, big answers go through the socket.")


class Readiness(BaseModel):
    status: Literal["ready", "starting", "failed"]
    reason: str | None = Field(None, description="Why not ready, e.g. an engine process restarting.")
    engine_pids: list[int] = Field(default_factory=list, description="Process ids of the engines that are up.")
    engines: list[EngineState] = Field(default_factory=list)
    shm: SharedMemory | None = Field(None, description="Shared memory for big answers (engine processes only).")
    tensorflow: str | None = None
    devices: list[str] = Field(default_factory=list, description="Visible TensorFlow devices.")
    onednn: bool | None = Field(
        None, description="Whether TensorFlow's oneDNN CPU kernels are on; the service turns them off (README)."
    )
    xla: bool
    trace_count: int | None = Field(None, description="tf.function traces so far; flat after warm-up.")
    xla_shapes: int | None = Field(None, description="Shapes compiled with XLA so far.")
    xla_compiling: int | None = Field(None, description="Shapes being compiled with XLA now, in the background.")
    memory_budget_bytes: int = Field(
        description="Most memory requests in flight may claim (JACOBIAN_MEMORY_BUDGET_BYTES)."
    )
    memory_claimed_bytes: int | None = Field(None, description="Bytes of the budget claimed by requests now.")


class VjpResponse(_Answer):
    UJ: Nested = Field(
        description="UJ[..., j, k] = Σ_i U[..., i]·∂W_i/∂X_jk: A×F per state — (K×)A×F for one state, "
        "(K×)B×A×F for a batch, (K×)A×F with sum_states."
    )


class JvpResponse(_Answer):
    JV: Nested = Field(
        description="JV[..., i] = Σ_jk ∂W_i/∂X_jk·V[..., j, k]: shaped like W (A, or B×A), with V's leading K axis."
    )


# Each endpoint's JSON request and answer (`app.endpoints`), the same for every model.
BODIES: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "jacobian": (JacobianRequest, JacobianResponse),
    "hessian": (HessianRequest, HessianResponse),
    "hvp": (HvpRequest, HvpResponse),
    "vjp": (VjpRequest, VjpResponse),
    "jvp": (JvpRequest, JvpResponse),
}


class TensorCard(BaseModel):
    name: str
    dtype: str = Field(description="float32, float64, int32, ...; the built-in models take float32 or float64")
    shape: list[int | None] = Field(description="null where the size is not fixed")
    symbols: list[str] = Field(
        default_factory=list, description="Names of its sizes shared with other tensors (A, F, B), where given."
    )


class VersionState(BaseModel):
    version: int
    state: Literal["available"] = Field(description="Served: requests may name it.")


class ModelCard(BaseModel):
    """A served model: its signature and which of its derivatives are defined."""

    name: str
    version: int = Field(description="The version requests that name none are computed on: the newest.")
    versions: list[VersionState] = Field(
        default_factory=list,
        description="The versions of its variables kept (JACOBIAN_MAX_VERSIONS): as loaded, and as pushed since "
        "(PUT /models/{name}/variables); /models/{name}/versions/{version}/{operation} names one.",
    )
    state: Literal["ready", "failed"]
    reason: str | None = Field(None, description="Why it failed to load.")
    inputs: list[TensorCard]
    outputs: list[TensorCard]
    differentiable: list[str] = Field(description="Inputs derivatives may be taken in (floating dtypes).")
    variables: list[TensorCard] = Field(
        description='Its trainable variables; `wrt: ["variables"]` takes them, a request\'s `variables` gives them '
        "values, and PUT /models/{name}/variables pushes new ones."
    )
    variables_fixed_by: str = Field("", description="An op using a variable other than by reading it: no values taken.")
    batch: bool = Field(description="Whether Jacobians are per example along a shared leading batch dimension.")
    shared: list[str] = Field(default_factory=list, description="Inputs without the batch axis: one for every example.")
    optional_batch: bool = Field(False, description="Whether one example may be sent without the batch dimension.")
    dtypes: list[str] = Field(
        default_factory=list,
        description="The floating dtypes it computes in, chosen by the request's `dtype`; empty: its signature's.",
    )
    undefined: dict[str, dict[str, str]] = Field(
        description="output → input (or 'variables') → the op TensorFlow defines no gradient for, on that path."
    )
    peak_factors: dict[str, float] = Field(
        default_factory=dict,
        description="operation → TensorFlow's peak memory measured on its first use, a multiple of a call's inputs and "
        "outputs (what the memory budget charges, with a margin).",
    )


class ModelList(BaseModel):
    models: list[ModelCard]


class VariablesPush(BaseModel):
    """PUT /models/{name}/variables: new values for some or all of a model's trainable variables."""

    model_config = ConfigDict(extra="forbid")

    variables: dict[str, Any] = Field(description="Values by the names on its card: nested lists of numbers.")


class ModelRequest(BaseModel):
    """A request to one operation of a repository model: its inputs by name, as its signature
    says (GET /models/{name}), and what to differentiate."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(description="Each input of the signature, by name: nested lists of numbers.")
    wrt: list[str] | None = Field(
        None,
        description='Inputs to differentiate in, and/or "variables" (its trainable variables); '
        "default: every differentiable input. Hessians and HVPs take exactly one input.",
    )
    of: list[str] | None = Field(None, description="Outputs to differentiate; default: every floating output's.")
    cotangents: dict[str, Any] | None = Field(None, description="vjp: {output: array like it}, optional leading K.")
    tangents: dict[str, Any] | None = Field(
        None, description="jvp and hvp: {input: array shaped like it}, with an optional leading K axis."
    )
    sum_batch: bool = Field(False, description="vjp: sum over the batch (a batch model's examples).")
    dtype: DType | None = Field(
        None,
        description="For a model that computes in several dtypes (its card's `dtypes`: the built-in policy's float32 "
        "or float64): which; default the service's. Other models compute in their signature's.",
    )
    variables: dict[str, Any] | None = Field(
        None,
        description="Values for some or all of its trainable variables, by the names on its card: it computes at "
        "them (derivatives in wrt 'variables' are then at these values), the others at the version's.",
    )
