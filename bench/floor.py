"""The benchmark's floor: the same answers by closed-form NumPy, no TensorFlow, no validation.

FastAPI + orjson on one uvicorn worker, as the reference floor the goals are written against
(a raw Starlette app, which an earlier version used, answers a 2×4 request ~1.6× faster than
that reference). The service computes the same arrays by autodiff and can at best match it.
Run: python -m uvicorn bench.floor:app --port 8101
"""

from __future__ import annotations

import io

import numpy as np
import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI(openapi_url=None)


def _inputs(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    doc = orjson.loads(body)
    dtype = np.dtype(doc.get("dtype") or "float32")
    return np.asarray(doc["X"], dtype), np.asarray(doc["Y"], dtype)


def _softmax_parts(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = X @ y
    shifted = z - z.max()
    e = np.exp(shifted)
    total = e.sum()
    return shifted - np.log(total), e / total


def _encode(request: Request, arrays: dict[str, np.ndarray]) -> Response:
    if "application/x-npz" in request.headers.get("accept", ""):
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return Response(buf.getvalue(), media_type="application/x-npz")
    return Response(orjson.dumps(arrays, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@app.post("/jacobian")
async def jacobian(request: Request) -> Response:
    X, y = _inputs(await request.body())
    W, p = _softmax_parts(X, y)
    J = (np.eye(len(p), dtype=X.dtype)[:, :, None] - p[None, :, None]) * y[None, None, :]
    return _encode(request, {"W": W, "J": J})


@app.post("/hessian")
async def hessian(request: Request) -> Response:
    X, y = _inputs(await request.body())
    W, p = _softmax_parts(X, y)
    A, F = X.shape
    dp = p[:, None] * (np.eye(A, dtype=X.dtype) - p[None, :])
    H = -dp[:, None, :, None] * np.outer(y, y)[None, :, None, :]
    return _encode(request, {"W": W, "H": np.ascontiguousarray(np.broadcast_to(H, (A, A, F, A, F)))})


def _npz_inputs(body: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(body)) as archive:
        return {name: archive[name] for name in archive.files}


@app.post("/vjp")
async def vjp(request: Request) -> Response:
    """One state, U: A or K×A, npz in: UJ = (u_j − p_j Σ_i u_i)·y_k."""
    arrays = _npz_inputs(await request.body())
    X, y, U = arrays["X"], arrays["Y"], arrays["U"]
    W, p = _softmax_parts(X, y)
    Uk = U.reshape(-1, U.shape[-1])
    UJ = (Uk[:, :, None] - p[None, :, None] * Uk.sum(axis=1)[:, None, None]) * y[None, None, :]
    return _encode(request, {"W": W, "UJ": UJ.reshape(U.shape + y.shape)})


@app.post("/jvp")
async def jvp(request: Request) -> Response:
    """One state, V: A×F or K×A×F, npz in: JV = (V·y)_i − p·(V·y)."""
    arrays = _npz_inputs(await request.body())
    X, y, V = arrays["X"], arrays["Y"], arrays["V"]
    W, p = _softmax_parts(X, y)
    Vy = V @ y
    return _encode(request, {"W": W, "JV": Vy - (Vy @ p)[..., None]})


@app.get("/health/ready")
async def ready() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")
