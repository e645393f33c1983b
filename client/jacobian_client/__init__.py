"""A Python client for the Jacobian service: NumPy arrays in, NumPy arrays out.

    from jacobian_client import Client

    with Client("http://127.0.0.1:8000") as client:
        r = client.jacobian(X, Y)          # r.W, r.J (NumPy), r.dtype, r.device
        m = client.model("mlp")            # a model of the service's repository
        m.jacobian({"x": x}).jacobian["y"]["x"]

npz on the wire by default (`transport="json"` for JSON); one exception type,
`JacobianServiceError`; 503 and failed connections retried (after `Retry-After`), 4xx never.
`AsyncClient` has the same methods as coroutines.
"""

from jacobian_client._clients import AsyncClient, Client
from jacobian_client._core import (
    HessianResult,
    HvpResult,
    JacobianResult,
    JacobianServiceError,
    JvpResult,
    ModelResult,
    Result,
    VjpResult,
)
from jacobian_client._models import AsyncModel, Model

__all__ = [
    "AsyncClient",
    "AsyncModel",
    "Client",
    "HessianResult",
    "HvpResult",
    "JacobianResult",
    "JacobianServiceError",
    "JvpResult",
    "Model",
    "ModelResult",
    "Result",
    "VjpResult",
]
