"""`Client` and `AsyncClient`: one method per operation, the same in both, over httpx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import httpx
from numpy.typing import ArrayLike

from jacobian_client import _core
from jacobian_client._core import (
    HessianResult,
    HvpResult,
    JacobianResult,
    JacobianServiceError,
    JvpResult,
    Operation,
    R,
    VjpResult,
)
from jacobian_client._models import AsyncModel, Model

DEFAULT_URL = "http://127.0.0.1:8000"


class _Base:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        transport: str = "npz",
    ) -> None:
        if transport not in _core.TRANSPORTS:
            raise JacobianServiceError(f"transport must be one of {', '.join(_core.TRANSPORTS)}, not {transport!r}")
        if retries < 0:
            raise JacobianServiceError(f"retries must be 0 or more, not {retries}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.transport = transport
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    def _next(self, attempt: int, deadline: float, outcome: httpx.Response | Exception) -> float | None:
        """Seconds to wait before the next attempt; None to stop (not retryable, out of retries or
        of time: the retries stay within the timeout)."""
        if attempt >= self.retries:
            return None
        delay = _core.retry_delay(attempt, outcome if isinstance(outcome, httpx.Response) else None)
        if delay is None or time.monotonic() + delay >= deadline:
            return None
        return delay

    def _finish(self, c: Operation[R], outcome: httpx.Response | Exception, attempts: int) -> R:
        if isinstance(outcome, Exception):
            raise _core.unreachable(self.base_url, outcome, attempts) from outcome
        return _core.decode(c, outcome)


class Client(_Base):
    """The Jacobian service, synchronously. Use as a context manager, or call `close()`.

    >>> with Client("http://127.0.0.1:8000") as client:
    ...     r = client.jacobian([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]], [1.0, 2.0, 3.0, 4.0])
    ...     r.J.shape
    (2, 2, 4)
    """

    def __init__(self, base_url: str = DEFAULT_URL, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.Client(timeout=self.timeout, headers=self._headers)

    def jacobian(
        self, X: ArrayLike, Y: ArrayLike, *, dtype: str | None = None, wrt: Iterable[str] = ("X",)
    ) -> JacobianResult:
        """W = log_softmax(X·Y) and ∂W/∂X (`J`) and/or ∂W/∂Y (`J_Y`), as `wrt` says."""
        return self._run(_core.call("/jacobian", JacobianResult, dtype, {"X": X, "Y": Y}, wrt=_core.wrt_of(wrt)))

    def hessian(self, X: ArrayLike, Y: ArrayLike, *, dtype: str | None = None) -> HessianResult:
        """W and the Hessian of every W_i in X (`H`)."""
        return self._run(_core.call("/hessian", HessianResult, dtype, {"X": X, "Y": Y}))

    def hvp(self, X: ArrayLike, Y: ArrayLike, V: ArrayLike, *, dtype: str | None = None) -> HvpResult:
        """W and the Hessian-vector products along V, shaped like X (`HV`)."""
        return self._run(_core.call("/hvp", HvpResult, dtype, {"X": X, "Y": Y, "V": V}))

    def vjp(
        self, X: ArrayLike, Y: ArrayLike, U: ArrayLike, *, sum_states: bool = False, dtype: str | None = None
    ) -> VjpResult:
        """W and U·J (`UJ`): U shaped like W, optionally with a leading K axis."""
        return self._run(_core.call("/vjp", VjpResult, dtype, {"X": X, "Y": Y, "U": U}, sum_states=sum_states))

    def jvp(self, X: ArrayLike, Y: ArrayLike, V: ArrayLike, *, dtype: str | None = None) -> JvpResult:
        """W and J·V (`JV`): V shaped like X, optionally with a leading K axis."""
        return self._run(_core.call("/jvp", JvpResult, dtype, {"X": X, "Y": Y, "V": V}))

    def model(self, name: str, version: int | None = None) -> Model:
        """A model served, by name (GET /models lists them): its newest version, or `version`."""
        return Model(self, name, version)

    def as_jax(self) -> Any:
        """The built-in model, W = log_softmax(X·Y), as a JAX function of X and Y (extra `[jax]`)."""
        from jacobian_client import jax as remote_jax

        return remote_jax.policy(self)

    def as_tf(self) -> Any:
        """The built-in model as a TensorFlow function of X and Y (extra `[tensorflow]`)."""
        from jacobian_client import tensorflow as remote_tf

        return remote_tf.policy(self)

    def _get(self, path: str) -> dict[str, Any]:
        r = self._http.get(self.base_url + path)
        if r.status_code != 200:
            raise _core.error_of(r)
        body: dict[str, Any] = r.json()
        return body

    def health(self) -> dict[str, Any]:
        """The readiness body (`/health/ready`), whether ready (200) or not yet (503)."""
        r = self._http.get(self.base_url + "/health/ready")
        if r.status_code not in (200, 503):
            raise _core.error_of(r)
        body: dict[str, Any] = r.json()
        return body

    def _run(self, c: Operation[R]) -> R:
        request = _core.encode(c, self.transport)
        deadline, attempt = time.monotonic() + self.timeout, 0
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.request(c.method, self.base_url + c.path, **request.kwargs)
            except httpx.HTTPError as err:
                outcome = _core.failed(err)
            if (delay := self._next(attempt, deadline, outcome)) is None:
                return self._finish(c, outcome, attempt + 1)
            attempt += 1
            time.sleep(delay)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(_Base):
    """The Jacobian service from asyncio: the same methods as `Client`, as coroutines."""

    def __init__(self, base_url: str = DEFAULT_URL, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(timeout=self.timeout, headers=self._headers)

    async def jacobian(
        self, X: ArrayLike, Y: ArrayLike, *, dtype: str | None = None, wrt: Iterable[str] = ("X",)
    ) -> JacobianResult:
        """W = log_softmax(X·Y) and ∂W/∂X (`J`) and/or ∂W/∂Y (`J_Y`), as `wrt` says."""
        return await self._run(_core.call("/jacobian", JacobianResult, dtype, {"X": X, "Y": Y}, wrt=_core.wrt_of(wrt)))

    async def hessian(self, X: ArrayLike, Y: ArrayLike, *, dtype: str | None = None) -> HessianResult:
        """W and the Hessian of every W_i in X (`H`)."""
        return await self._run(_core.call("/hessian", HessianResult, dtype, {"X": X, "Y": Y}))

    async def hvp(self, X: ArrayLike, Y: ArrayLike, V: ArrayLike, *, dtype: str | None = None) -> HvpResult:
        """W and the Hessian-vector products along V, shaped like X (`HV`)."""
        return await self._run(_core.call("/hvp", HvpResult, dtype, {"X": X, "Y": Y, "V": V}))

    async def vjp(
        self, X: ArrayLike, Y: ArrayLike, U: ArrayLike, *, sum_states: bool = False, dtype: str | None = None
    ) -> VjpResult:
        """W and U·J (`UJ`): U shaped like W, optionally with a leading K axis."""
        return await self._run(_core.call("/vjp", VjpResult, dtype, {"X": X, "Y": Y, "U": U}, sum_states=sum_states))

    async def jvp(self, X: ArrayLike, Y: ArrayLike, V: ArrayLike, *, dtype: str | None = None) -> JvpResult:
        """W and J·V (`JV`): V shaped like X, optionally with a leading K axis."""
        return await self._run(_core.call("/jvp", JvpResult, dtype, {"X": X, "Y": Y, "V": V}))

    def model(self, name: str, version: int | None = None) -> AsyncModel:
        """A model served, by name (GET /models lists them): its newest version, or `version`."""
        return AsyncModel(self, name, version)

    async def _get(self, path: str) -> dict[str, Any]:
        r = await self._http.get(self.base_url + path)
        if r.status_code != 200:
            raise _core.error_of(r)
        body: dict[str, Any] = r.json()
        return body

    async def health(self) -> dict[str, Any]:
        """The readiness body (`/health/ready`), whether ready (200) or not yet (503)."""
        r = await self._http.get(self.base_url + "/health/ready")
        if r.status_code not in (200, 503):
            raise _core.error_of(r)
        body: dict[str, Any] = r.json()
        return body

    async def _run(self, c: Operation[R]) -> R:
        request = _core.encode(c, self.transport)
        deadline, attempt = time.monotonic() + self.timeout, 0
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.request(c.method, self.base_url + c.path, **request.kwargs)
            except httpx.HTTPError as err:
                outcome = _core.failed(err)
            if (delay := self._next(attempt, deadline, outcome)) is None:
                return self._finish(c, outcome, attempt + 1)
            attempt += 1
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
