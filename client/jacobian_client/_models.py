"""`Model` and `AsyncModel`: one served model's operations (`client.model(name)`), NumPy in and
out, dicts by the signature's names; the same methods in both."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from jacobian_client import _core
from jacobian_client._core import ModelResult, Operation, Pushed, R

Arrays = Mapping[str, ArrayLike]
Names = Iterable[str] | None


class _Sends(Protocol):
    """A client's transport, as a model's calls use it (`Client`)."""

    def _get(self, path: str) -> dict[str, Any]: ...
    def _run(self, call: Operation[R]) -> R: ...
    def model(self, name: str) -> Model: ...


class _SendsAsync(Protocol):
    """An async client's transport (`AsyncClient`)."""

    def _get(self, path: str) -> Awaitable[dict[str, Any]]: ...
    def _run(self, call: Operation[R]) -> Awaitable[R]: ...


def model_call(
    name: str, op: str, groups: Mapping[str, Mapping[str, ArrayLike] | None], **options: Any
) -> Operation[ModelResult]:
    """A call to POST /models/{name}/{op} (/models/{name}/versions/{version}/{op} for a version):
    arrays by group (inputs, cotangents, tangents, variables), each in its own dtype (the service
    casts floats to the signature's, and takes integers for integers)."""
    version = options.pop("version", None)
    path = f"/models/{name}/versions/{version}/{op}" if version is not None else f"/models/{name}/{op}"
    chosen = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in options.items()}
    return Operation(path, _grouped(groups), chosen, ModelResult, nested=True)


def push_call(name: str, variables: Mapping[str, ArrayLike]) -> Operation[Pushed]:
    """PUT /models/{name}/variables: new values for some or all of its variables, a new version."""
    if not variables:
        raise _core.JacobianServiceError("push_variables needs values for at least one variable")
    return Operation(f"/models/{name}/variables", _grouped({"variables": variables}), {}, Pushed, True, "PUT")


def _grouped(groups: Mapping[str, Mapping[str, ArrayLike] | None]) -> dict[str, np.ndarray]:
    arrays = {f"{g}/{k}": np.asarray(v) for g, named in groups.items() if named for k, v in named.items()}
    for key, a in arrays.items():
        if a.dtype.kind not in "iuf":
            raise _core.JacobianServiceError(f"{key} is not an array of numbers (dtype {a.dtype})")
    return arrays


class _ModelCalls:
    """The calls of one model's operations, for `Model` and `AsyncModel`: at its newest version,
    or at `version`; at the caller's `variables` (some or all, by the card's names) when given."""

    def __init__(self, name: str, version: int | None = None) -> None:
        self.name, self.version = name, version

    def _call(self, op: str, inputs: Arrays, **groups_and_options: Any) -> Operation[ModelResult]:
        groups = {g: groups_and_options.pop(g, None) for g in ("cotangents", "tangents", "variables")}
        options = {k: v for k, v in groups_and_options.items() if v is not None}
        return model_call(self.name, op, {"inputs": inputs, **groups}, version=self.version, **options)

    def predict_call(self, inputs: Arrays, variables: Arrays | None) -> Operation[ModelResult]:
        return self._call("predict", inputs, variables=variables)

    def jacobian_call(self, inputs: Arrays, wrt: Names, of: Names, variables: Arrays | None) -> Operation[ModelResult]:
        return self._call("jacobian", inputs, wrt=wrt, of=of, variables=variables)

    def vjp_call(
        self, inputs: Arrays, cotangents: Arrays, wrt: Names, sum_batch: bool, variables: Arrays | None
    ) -> Operation[ModelResult]:
        return self._call(
            "vjp", inputs, cotangents=cotangents, wrt=wrt, sum_batch=sum_batch or None, variables=variables
        )

    def jvp_call(self, inputs: Arrays, tangents: Arrays, of: Names, variables: Arrays | None) -> Operation[ModelResult]:
        return self._call("jvp", inputs, tangents=tangents, of=of, variables=variables)

    def hessian_call(self, inputs: Arrays, wrt: Names, of: Names, variables: Arrays | None) -> Operation[ModelResult]:
        return self._call("hessian", inputs, wrt=wrt, of=of, variables=variables)

    def hvp_call(
        self, inputs: Arrays, tangents: Arrays, wrt: Names, of: Names, variables: Arrays | None
    ) -> Operation[ModelResult]:
        return self._call("hvp", inputs, tangents=tangents, wrt=wrt, of=of, variables=variables)

    def push_call(self, variables: Arrays) -> Operation[Pushed]:
        return push_call(self.name, variables)

    def _variables_path(self) -> str:
        return f"/models/{self.name}" + (f"/versions/{self.version}" if self.version else "") + "/variables"


def _typed(body: dict[str, Any], card: dict[str, Any]) -> dict[str, np.ndarray]:
    dtypes = {v["name"]: v["dtype"] for v in card["variables"]}
    return {k: np.asarray(v, dtypes[k]) for k, v in body["variables"].items()}


class Model(_ModelCalls):
    """One served model (`client.model(name)`), the built-in `policy` or a repository's: NumPy in,
    NumPy out, dicts by the signature's names. `wrt` names inputs and/or "variables" (its
    trainable variables)."""

    def __init__(self, client: _Sends, name: str, version: int | None = None) -> None:
        super().__init__(name, version)
        self._client = client

    def card(self) -> dict[str, Any]:
        """GET /models/{name}: its signature, variables and which derivatives are defined."""
        return self._client._get(f"/models/{self.name}")

    def predict(self, inputs: Arrays, *, variables: Arrays | None = None) -> ModelResult:
        return self._client._run(self.predict_call(inputs, variables))

    def jacobian(
        self, inputs: Arrays, *, wrt: Names = None, of: Names = None, variables: Arrays | None = None
    ) -> ModelResult:
        """`.jacobian[output][input]`: per example (B, *output[1:], *input[1:]) for a batch model."""
        return self._client._run(self.jacobian_call(inputs, wrt, of, variables))

    def vjp(
        self,
        inputs: Arrays,
        cotangents: Arrays,
        *,
        wrt: Names = None,
        sum_batch: bool = False,
        variables: Arrays | None = None,
    ) -> ModelResult:
        """`.vjp[input or variable]`; cotangents shaped like outputs, optionally with a leading K axis."""
        return self._client._run(self.vjp_call(inputs, cotangents, wrt, sum_batch, variables))

    def jvp(
        self, inputs: Arrays, tangents: Arrays, *, of: Names = None, variables: Arrays | None = None
    ) -> ModelResult:
        """`.jvp[output]`; tangents shaped like inputs, optionally with a leading K axis."""
        return self._client._run(self.jvp_call(inputs, tangents, of, variables))

    def hessian(
        self, inputs: Arrays, *, wrt: Names = None, of: Names = None, variables: Arrays | None = None
    ) -> ModelResult:
        return self._client._run(self.hessian_call(inputs, wrt, of, variables))

    def hvp(
        self, inputs: Arrays, tangents: Arrays, *, wrt: Names = None, of: Names = None, variables: Arrays | None = None
    ) -> ModelResult:
        return self._client._run(self.hvp_call(inputs, tangents, wrt, of, variables))

    def variables(self) -> dict[str, np.ndarray]:
        """GET /models/{name}/variables: the values of its trainable variables the service holds
        (at its newest version, or this handle's), in their dtypes: where training starts."""
        return _typed(self._client._get(self._variables_path()), self.card())

    def push_variables(self, variables: Arrays) -> int:
        """PUT /models/{name}/variables: new values for some or all of its trainable variables, a new
        version that requests without one now get (every engine has it when this returns): its number."""
        return self._client._run(self.push_call(variables)).version

    def as_jax(self, *, variables: bool = False) -> Any:
        """This model as a JAX function that `jax.grad`, `jacrev`, `jacfwd`, `vmap`, `jit` and
        `hessian` differentiate through (extra `[jax]`; `jacobian_client.jax.model`)."""
        from jacobian_client import jax as remote_jax

        return remote_jax.model(self._client, self.name, variables=variables)

    def as_tf(self, *, variables: bool = False) -> Any:
        """This model as a TensorFlow function that `tf.GradientTape`, `tf.function` and
        `tf.autodiff.ForwardAccumulator` differentiate through (extra `[tensorflow]`;
        `jacobian_client.tensorflow.model`)."""
        from jacobian_client import tensorflow as remote_tf

        return remote_tf.model(self._client, self.name, variables=variables)


class AsyncModel(_ModelCalls):
    """`Model`'s methods as coroutines (`async_client.model(name)`)."""

    def __init__(self, client: _SendsAsync, name: str, version: int | None = None) -> None:
        super().__init__(name, version)
        self._client = client

    async def card(self) -> dict[str, Any]:
        return await self._client._get(f"/models/{self.name}")

    async def predict(self, inputs: Arrays, *, variables: Arrays | None = None) -> ModelResult:
        return await self._client._run(self.predict_call(inputs, variables))

    async def jacobian(
        self, inputs: Arrays, *, wrt: Names = None, of: Names = None, variables: Arrays | None = None
    ) -> ModelResult:
        return await self._client._run(self.jacobian_call(inputs, wrt, of, variables))

    async def vjp(
        self,
        inputs: Arrays,
        cotangents: Arrays,
        *,
        wrt: Names = None,
        sum_batch: bool = False,
        variables: Arrays | None = None,
    ) -> ModelResult:
        return await self._client._run(self.vjp_call(inputs, cotangents, wrt, sum_batch, variables))

    async def jvp(
        self, inputs: Arrays, tangents: Arrays, *, of: Names = None, variables: Arrays | None = None
    ) -> ModelResult:
        return await self._client._run(self.jvp_call(inputs, tangents, of, variables))

    async def hessian(
        self, inputs: Arrays, *, wrt: Names = None, of: Names = None, variables: Arrays | None = None
    ) -> ModelResult:
        return await self._client._run(self.hessian_call(inputs, wrt, of, variables))

    async def hvp(
        self, inputs: Arrays, tangents: Arrays, *, wrt: Names = None, of: Names = None, variables: Arrays | None = None
    ) -> ModelResult:
        return await self._client._run(self.hvp_call(inputs, tangents, wrt, of, variables))

    async def variables(self) -> dict[str, np.ndarray]:
        return _typed(await self._client._get(self._variables_path()), await self.card())

    async def push_variables(self, variables: Arrays) -> int:
        return (await self._client._run(self.push_call(variables))).version
