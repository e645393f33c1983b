"""`Model` and `AsyncModel`: one served model's operations (`client.model(name)`), NumPy in and
out, dicts by the signature's names; the same methods in both."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Protocol

from numpy.typing import ArrayLike

from jacobian_client import _core
from jacobian_client._core import ModelResult, Operation, R

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


class _ModelCalls:
    """The calls of one repository model's operations, for `Model` and `AsyncModel`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _call(self, op: str, inputs: Arrays, **groups_and_options: Any) -> Operation[ModelResult]:
        groups = {g: groups_and_options.pop(g, None) for g in ("cotangents", "tangents")}
        options = {k: v for k, v in groups_and_options.items() if v is not None}
        return _core.model_call(self.name, op, {"inputs": inputs, **groups}, **options)

    def predict_call(self, inputs: Arrays) -> Operation[ModelResult]:
        return self._call("predict", inputs)

    def jacobian_call(self, inputs: Arrays, wrt: Names, of: Names) -> Operation[ModelResult]:
        return self._call("jacobian", inputs, wrt=wrt, of=of)

    def vjp_call(self, inputs: Arrays, cotangents: Arrays, wrt: Names, sum_batch: bool) -> Operation[ModelResult]:
        return self._call("vjp", inputs, cotangents=cotangents, wrt=wrt, sum_batch=sum_batch or None)

    def jvp_call(self, inputs: Arrays, tangents: Arrays, of: Names) -> Operation[ModelResult]:
        return self._call("jvp", inputs, tangents=tangents, of=of)

    def hessian_call(self, inputs: Arrays, wrt: Names, of: Names) -> Operation[ModelResult]:
        return self._call("hessian", inputs, wrt=wrt, of=of)

    def hvp_call(self, inputs: Arrays, tangents: Arrays, wrt: Names, of: Names) -> Operation[ModelResult]:
        return self._call("hvp", inputs, tangents=tangents, wrt=wrt, of=of)


class Model(_ModelCalls):
    """One served model (`client.model(name)`), the built-in `policy` or a repository's: NumPy in,
    NumPy out, dicts by the signature's names. `wrt` names inputs and/or "variables" (its
    trainable variables)."""

    def __init__(self, client: _Sends, name: str) -> None:
        super().__init__(name)
        self._client = client

    def card(self) -> dict[str, Any]:
        """GET /models/{name}: its signature, variables and which derivatives are defined."""
        return self._client._get(f"/models/{self.name}")

    def predict(self, inputs: Arrays) -> ModelResult:
        return self._client._run(self.predict_call(inputs))

    def jacobian(self, inputs: Arrays, *, wrt: Names = None, of: Names = None) -> ModelResult:
        """`.jacobian[output][input]`: per example (B, *output[1:], *input[1:]) for a batch model."""
        return self._client._run(self.jacobian_call(inputs, wrt, of))

    def vjp(self, inputs: Arrays, cotangents: Arrays, *, wrt: Names = None, sum_batch: bool = False) -> ModelResult:
        """`.vjp[input or variable]`; cotangents shaped like outputs, optionally with a leading K axis."""
        return self._client._run(self.vjp_call(inputs, cotangents, wrt, sum_batch))

    def jvp(self, inputs: Arrays, tangents: Arrays, *, of: Names = None) -> ModelResult:
        """`.jvp[output]`; tangents shaped like inputs, optionally with a leading K axis."""
        return self._client._run(self.jvp_call(inputs, tangents, of))

    def hessian(self, inputs: Arrays, *, wrt: Names = None, of: Names = None) -> ModelResult:
        return self._client._run(self.hessian_call(inputs, wrt, of))

    def hvp(self, inputs: Arrays, tangents: Arrays, *, wrt: Names = None, of: Names = None) -> ModelResult:
        return self._client._run(self.hvp_call(inputs, tangents, wrt, of))

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

    def __init__(self, client: _SendsAsync, name: str) -> None:
        super().__init__(name)
        self._client = client

    async def card(self) -> dict[str, Any]:
        return await self._client._get(f"/models/{self.name}")

    async def predict(self, inputs: Arrays) -> ModelResult:
        return await self._client._run(self.predict_call(inputs))

    async def jacobian(self, inputs: Arrays, *, wrt: Names = None, of: Names = None) -> ModelResult:
        return await self._client._run(self.jacobian_call(inputs, wrt, of))

    async def vjp(
        self, inputs: Arrays, cotangents: Arrays, *, wrt: Names = None, sum_batch: bool = False
    ) -> ModelResult:
        return await self._client._run(self.vjp_call(inputs, cotangents, wrt, sum_batch))

    async def jvp(self, inputs: Arrays, tangents: Arrays, *, of: Names = None) -> ModelResult:
        return await self._client._run(self.jvp_call(inputs, tangents, of))

    async def hessian(self, inputs: Arrays, *, wrt: Names = None, of: Names = None) -> ModelResult:
        return await self._client._run(self.hessian_call(inputs, wrt, of))

    async def hvp(self, inputs: Arrays, tangents: Arrays, *, wrt: Names = None, of: Names = None) -> ModelResult:
        return await self._client._run(self.hvp_call(inputs, tangents, wrt, of))
