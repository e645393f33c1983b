"""UM-Bridge's bodies as pydantic models, for the docs page and the OpenAPI document only: the
routes read their JSON themselves (`app.http.umbridge_routes`), as UM-Bridge's own server does.
The examples are the built-in model's, with its open sizes in `config`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.http.openapi import COMPUTE_ERRORS, OPTIONAL_KEY

_X = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # the built-in's X (2×4, whole) and one state y
_Y = [1.0, 2.0, 3.0, 4.0]
_CONFIG = {"A": 2, "F": 4}

_CONFIG_DOC = (
    'Open sizes by name (the built-in\'s {"A": 2, "F": 4}) or {"shapes": {tensor: [...]}}; '
    '"variables" (values by name) and "dtype" (default float64).'
)
_INPUT_DOC = "The model's inputs, in its card's order, each one example flattened."


def _example(**fields: Any) -> ConfigDict:
    example: Any = {"name": "policy", **fields, "config": _CONFIG}
    return ConfigDict(json_schema_extra={"examples": [example]})


class UMBridgeModel(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "policy"}]})
    name: str = Field(description="A model that GET /umbridge/Info lists.")


class UMBridgeNamed(UMBridgeModel):
    model_config = _example()
    config: dict[str, Any] = Field(default_factory=dict, description=_CONFIG_DOC)


class UMBridgeEvaluate(UMBridgeNamed):
    model_config = _example(input=[_X, _Y])
    input: list[list[float]] = Field(description=_INPUT_DOC)


class UMBridgeGradient(UMBridgeEvaluate):
    model_config = _example(input=[_X, _Y], outWrt=0, inWrt=1, sens=[1.0, 0.0])
    outWrt: int = Field(description="The output's index.")
    inWrt: int = Field(description="The input's index.")
    sens: list[float] = Field(description="The cotangent: a vector of the output's size.")


class UMBridgeApplyJacobian(UMBridgeEvaluate):
    model_config = _example(input=[_X, _Y], outWrt=0, inWrt=1, vec=[1.0, 0.0, 0.0, 0.0])
    outWrt: int = Field(description="The output's index.")
    inWrt: int = Field(description="The input's index.")
    vec: list[float] = Field(description="The tangent: a vector of the input's size.")


class UMBridgeApplyHessian(UMBridgeEvaluate):
    model_config = _example(input=[_X, _Y], outWrt=0, inWrt1=0, inWrt2=1, sens=[1.0, 0.0], vec=[1.0, 0.0, 0.0, 0.0])
    outWrt: int = Field(description="The output's index.")
    inWrt1: int = Field(description="The input the answer is a gradient in (its size).")
    inWrt2: int = Field(description="The input `vec` moves (its size).")
    sens: list[float] = Field(description="The cotangent: a vector of the output's size.")
    vec: list[float] = Field(description="The tangent: a vector of input inWrt2's size.")


class UMBridgeInfo(BaseModel):
    protocolVersion: float
    models: list[str]


class UMBridgeInputSizes(BaseModel):
    inputSizes: list[int]


class UMBridgeOutputSizes(BaseModel):
    outputSizes: list[int]


class UMBridgeModelInfo(BaseModel):
    support: dict[str, bool] = Field(description="Evaluate, Gradient, ApplyJacobian, ApplyHessian: served or not.")


class UMBridgeOutput(BaseModel):
    output: list[list[float]] | list[float] = Field(
        description="Evaluate: every output's vector; the derivatives: the one vector."
    )


class UMBridgeErrorDetail(BaseModel):
    type: str = Field(description="InvalidInput, ModelNotFound, UnsupportedFeature, or the service's own code.")
    message: str


class UMBridgeError(BaseModel):
    error: UMBridgeErrorDetail


_STATUS = {
    400: "InvalidInput, ModelNotFound or UnsupportedFeature (UM-Bridge's), or a malformed body.",
    **{s: COMPUTE_ERRORS[s]["description"] for s in (401, 404, 405, 413, 503, 504)},
}
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": UMBridgeError, "description": d} for s, d in _STATUS.items()}
BODIES: dict[str, type[UMBridgeEvaluate]] = {
    "Evaluate": UMBridgeEvaluate,
    "Gradient": UMBridgeGradient,
    "ApplyJacobian": UMBridgeApplyJacobian,
    "ApplyHessian": UMBridgeApplyHessian,
}
_ONE = "one example of a batch model (its per-example shapes), a model without a batch axis whole"
DOCS = {
    "Info": ("The models served", "UM-Bridge's Info: the protocol's version (1.0) and every model ready."),
    "InputSizes": ("The inputs' sizes", f"Each input's number of values, flattened: {_ONE}."),
    "OutputSizes": ("The outputs' sizes", f"Each output's number of values, flattened: {_ONE}."),
    "ModelInfo": ("The operations the model supports", "Evaluate always; the derivatives when it is differentiable."),
    "Evaluate": ("The model's outputs (a predict)", f"Every output of {_ONE}, as a flat float64 vector."),
    "Gradient": (
        "sens · ∂output/∂input (a vjp)",
        "The service's vjp of output `outWrt` in input `inWrt`, with `sens` as the cotangent: a vector of the "
        "input's size. An integer input is an InvalidInput.",
    ),
    "ApplyJacobian": (
        "∂output/∂input · vec (a jvp)",
        "The service's jvp of output `outWrt` along `vec` in input `inWrt`: a vector of the output's size.",
    ),
    "ApplyHessian": (
        "∂/∂input1 (sens · ∂output/∂input2 · vec) (an hvp)",
        "The service's hvp: the second derivative of `sens` · output `outWrt` in inputs `inWrt1` and `inWrt2`, "
        "applied to `vec` (in `inWrt2`), a vector of `inWrt1`'s size; mixed when the two inputs differ.",
    ),
}


def body(model: type[BaseModel], secured: bool = False) -> dict[str, Any]:
    """The route's requestBody for the OpenAPI document, with its example; `secured`: the API key
    (optional: needed only when JACOBIAN_API_KEY is set)."""
    example = model.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    schema = model.model_json_schema()
    content = {"application/json": {"schema": schema, "example": example}}
    security: dict[str, Any] = {"security": OPTIONAL_KEY} if secured else {}
    return {"requestBody": {"required": True, "content": content}, **security}
