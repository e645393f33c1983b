"""The one place where exceptions become HTTP responses: in the ErrorBody shape, under /v2 in
the Open Inference Protocol's (`{"error": message}`, and 400 where the native API says 422), and
under /umbridge in UM-Bridge's (`{"error": {"type", "message"}}`, 400 for the request's fault, as
its reference server answers)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.errors import ServiceError, Unauthorized

log = logging.getLogger("app")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


V2_PREFIX = "/v2/"
UMBRIDGE_PREFIX = "/umbridge/"
_UMBRIDGE_TYPES = {"unknown_model": "ModelNotFound", "undefined_gradient": "UnsupportedFeature"}


def _respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    request.state.error_code = code
    path = request.scope["path"]
    body: dict[str, Any]
    if path.startswith(V2_PREFIX) or path == V2_PREFIX[:-1]:  # the protocol has no 422: a bad request is 400
        body, status = {"error": message}, 400 if status == 422 else status
    elif path.startswith(UMBRIDGE_PREFIX):
        kind = _UMBRIDGE_TYPES.get(code) or ("InvalidInput" if status in (400, 422) else code)
        body, status = (
            {"error": {"type": kind, "message": message}},
            400 if code in _UMBRIDGE_TYPES or status == 422 else status,
        )
    else:
        body = {"code": code, "message": message, "details": details or []}
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return _respond(request, exc.status, exc.code, exc.message, exc.details, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"No such path: {request.url.path}. See /docs for the operations."
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "?")
        message = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    return _respond(request, exc.status_code, code, message, headers=dict(exc.headers or {}))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details[:5])
    return _respond(request, 422, "invalid_input", f"Invalid request: {summary}", details)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Never a traceback, path or version in a body; the log keeps them.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _respond(request, 500, "internal_error", "Internal error; the service logged it")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
