"""What both clients share, free of I/O: requests built from arrays, answers read into results,
errors read from the server's error body, and the retry policy."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import numpy as np
from numpy.typing import ArrayLike, NDArray

NPZ = "application/x-npz"
JSON = "application/json"
TRANSPORTS = ("npz", "json")
DTYPES = ("float32", "float64")
RETRY_AFTER_CAP_S = 30.0  # a server asking for longer is not waited on that long per attempt
BACKOFF_S = 0.1  # after a failed connection: 0.1 s, 0.2 s, 0.4 s, ...

Array = NDArray[np.floating[Any]]


class JacobianServiceError(Exception):
    """Any failure to get an answer: an error response (`status`, the server's `code`, `message` and
    `details`), or a server that could not be reached after the retries (`status` None)."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, details: list[Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}" if status is not None else message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or []


@dataclass(frozen=True)
class Result:
    W: Array
    dtype: str  # float32 or float64: what the server computed in
    device: str  # the TensorFlow device that ran it, e.g. /device:CPU:0


@dataclass(frozen=True)
class JacobianResult(Result):
    J: Array | None = None  # ∂W_i/∂X: A×A×F (B×A×A×F for a batch), when "X" in wrt
    J_Y: Array | None = None  # ∂W_i/∂Y: A×F (B×A×F), when "Y" in wrt


@dataclass(frozen=True)
class HessianResult(Result):
    H: Array | None = None  # A×A×F×A×F (B×… for a batch)


@dataclass(frozen=True)
class HvpResult(Result):
    HV: Array | None = None  # A×A×F (B×… for a batch)


@dataclass(frozen=True)
class VjpResult(Result):
    UJ: Array | None = None  # (K×)A×F per state; (K×)A×F summed with sum_states


@dataclass(frozen=True)
class JvpResult(Result):
    JV: Array | None = None  # shaped like W, with the tangents' K axis if given


@dataclass(frozen=True)
class ModelResult:
    """A repository model's answer: its `outputs` by name, and the operation's derivatives —
    `jacobian[output][input or variable]`, `vjp[input or variable]`, `jvp[output]`,
    `hessian[output][input]`, `hvp[output][input]` (the others None)."""

    outputs: dict[str, np.ndarray]
    model: str
    version: int
    dtype: str
    device: str
    jacobian: dict[str, dict[str, np.ndarray]] | None = None
    vjp: dict[str, np.ndarray] | None = None
    jvp: dict[str, np.ndarray] | None = None
    hessian: dict[str, dict[str, np.ndarray]] | None = None
    hvp: dict[str, dict[str, np.ndarray]] | None = None


@dataclass(frozen=True)
class Pushed:
    """A push's answer: the model's new version, which requests without a version now get."""

    model: str
    version: int


R = TypeVar("R", bound="Result | ModelResult | Pushed")
MODEL_META = ("model", "version", "dtype", "device")


@dataclass(frozen=True)
class Operation(Generic[R]):
    """One operation's request: where, what arrays, what options, and the result type."""

    path: str
    arrays: dict[str, np.ndarray]
    options: dict[str, Any]
    result: type[R]
    nested: bool = False  # a repository model's: arrays named group/name ("inputs/x"), nested in JSON
    method: str = "POST"


def as_array(value: ArrayLike, name: str) -> np.ndarray:
    """float32 and float64 arrays as given; other numbers as float64 (the server computes in floats)."""
    a = np.asarray(value)
    if a.dtype not in (np.float32, np.float64):
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            raise JacobianServiceError(f"{name} is not an array of numbers (dtype {a.dtype})") from None
    return a


def call(
    path: str, result: type[R], dtype: str | None, arrays: Mapping[str, ArrayLike], **options: Any
) -> Operation[R]:
    if dtype is not None and dtype not in DTYPES:
        raise JacobianServiceError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    named = {k: as_array(v, k) for k, v in arrays.items()}
    return Operation(path, named, {"dtype": dtype, **options}, result)


def wrt_of(wrt: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(wrt))
    if not names or any(n not in ("X", "Y") for n in names):
        raise JacobianServiceError(f'wrt must name "X", "Y" or both, not {names!r}')
    return names


# ---- the wire


@dataclass(frozen=True)
class Request:
    content: bytes
    headers: dict[str, str]
    params: dict[str, str]

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"content": self.content, "headers": self.headers, "params": self.params}


def encode(c: Operation[Any], transport: str) -> Request:
    options = {k: v for k, v in c.options.items() if v is not None}
    if transport == "npz":
        buf = io.BytesIO()
        np.savez(buf, **c.arrays)  # type: ignore[arg-type]
        params = {k: _query(v) for k, v in options.items() if not (k == "sum_states" and v is False)}
        return Request(buf.getvalue(), {"content-type": NPZ, "accept": NPZ}, params)
    if c.nested:
        return Request(json.dumps({**_nest(c.arrays, lambda a: a.tolist()), **options}).encode(), _JSON_BOTH, {})
    # JSON: the arrays' own dtype unless told, as the npz rule would give.
    options.setdefault("dtype", str(np.result_type(*c.arrays.values())))
    body = {**{k: a.tolist() for k, a in c.arrays.items()}, **options}
    return Request(json.dumps(body).encode(), {"content-type": JSON, "accept": JSON}, {})


_JSON_BOTH = {"content-type": JSON, "accept": JSON}


def _nest(flat: Mapping[str, Any], leaf: Any = lambda a: a) -> dict[str, Any]:
    """{"jacobian/y/x": a} -> {"jacobian": {"y": {"x": leaf(a)}}}."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *path, last = key.split("/", 2) if key.startswith(("jacobian/", "hessian/", "hvp/")) else key.split("/", 1)
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[last] = leaf(value)
    return tree


def _arrays(tree: Any) -> Any:
    return {k: _arrays(v) for k, v in tree.items()} if isinstance(tree, dict) else np.asarray(tree)


def _decode_model(response: httpx.Response) -> ModelResult:
    if response.headers.get("content-type", "").startswith(NPZ):
        with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
            flat = {k: archive[k] for k in archive.files}
        meta = {k: flat.pop(k).item() for k in MODEL_META}
        doc = _nest(flat)
    else:
        doc = response.json()
        meta = {k: doc.pop(k) for k in MODEL_META}
        doc = _arrays(doc)
    return ModelResult(**doc, **meta)


def _query(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(sorted(value))  # "X,Y", as the service spells both
    return str(value)


def decode(c: Operation[R], response: httpx.Response) -> R:
    if response.status_code != 200:
        raise error_of(response)
    if c.result is Pushed:
        return Pushed(**response.json())  # type: ignore[return-value]
    if c.nested:
        return _decode_model(response)  # type: ignore[return-value]
    if response.headers.get("content-type", "").startswith(NPZ):
        with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        meta = {k: str(arrays.pop(k)) for k in ("dtype", "device")}
    else:
        doc = response.json()
        meta = {k: doc.pop(k) for k in ("dtype", "device")}
        arrays = {k: np.asarray(v, dtype=meta["dtype"]) for k, v in doc.items() if v is not None}
    fields: dict[str, Any] = {**arrays, **meta}
    return c.result(**fields)


def error_of(response: httpx.Response) -> JacobianServiceError:
    try:
        body = response.json()
        message, code, details = body["message"], body.get("code"), body.get("details", [])
    except (ValueError, KeyError, TypeError):
        message, code, details = response.text[:500] or response.reason_phrase, None, []
    return JacobianServiceError(message, status=response.status_code, code=code, details=details)


# ---- retries


# Failed connections, not slow answers: a read timeout is not retried (it would only wait again).
RETRYABLE_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


def failed(err: httpx.HTTPError) -> Exception:
    """A connection that failed (retried), or raise: anything else httpx raises is not retried."""
    if isinstance(err, RETRYABLE_ERRORS):
        return err
    raise JacobianServiceError(f"{type(err).__name__}: {err}", code="transport_error") from err


def retry_delay(attempt: int, response: httpx.Response | None) -> float | None:
    """Seconds to wait before retrying, or None when this outcome is not retried: only 503 (busy,
    restarting: after its Retry-After, capped) and connections that failed (backing off). Jitter
    spreads clients that were refused together; it only ever adds to what the server asked."""
    base: float
    if response is None:
        base = BACKOFF_S * 2**attempt
    elif response.status_code == 503:
        header = response.headers.get("retry-after", "")
        base = float(header) if header.replace(".", "", 1).isdigit() else BACKOFF_S
    else:
        return None
    return min(base, RETRY_AFTER_CAP_S) * random.uniform(1.0, 1.25)


def unreachable(url: str, err: Exception, attempts: int) -> JacobianServiceError:
    return JacobianServiceError(
        f"Could not reach the Jacobian service at {url} after {attempts} attempt(s): {type(err).__name__}: {err}",
        code="unreachable",
    )
