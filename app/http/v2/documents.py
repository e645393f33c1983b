"""The Open Inference Protocol's documents (KServe V2 REST): pydantic models, parsed and validated
by `app.http.v2.protocol`, and in the OpenAPI spec through `app.http.v2.rest`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

Parameters = dict[str, str | bool | int | float]


class RequestInput(BaseModel):
    name: str = Field(description="X, Y, and V or U, as in the native API")
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: str = Field(description="FP32 or FP64; every input the same, and the computation's dtype")
    parameters: Parameters = Field(default_factory=dict, description='"binary_data_size": bytes in the body')
    data: list[Any] | None = Field(None, description="Row-major values, flat or nested; absent for binary data")


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters = Field(default_factory=dict, description='"binary_data": true for raw bytes')


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters = Field(
        default_factory=dict, description='"binary_data_output": true for every output as binary; "sum_states" (vjp)'
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description="What to compute; absent: the model's defaults")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters = Field(default_factory=dict)
    data: list[float] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters = Field(default_factory=dict, description="dtype and device that computed it")
    outputs: list[ResponseOutput]


class InferenceErrorBody(BaseModel):
    """The Open Inference Protocol's error shape."""

    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for each dimension that varies")
    optional: bool | None = Field(
        None, description="An input a request may leave out (a model's `variables/<name>`: its version's values)."
    )


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
