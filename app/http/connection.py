"""The HTTP/1.1 connection: uvicorn's httptools protocol with the two bounds it lacks against slow
clients (nginx's `client_header_timeout` / `client_body_timeout` and `worker_connections`).

- A deadline for receiving each whole request, headers and body (`request_read_timeout_s`),
  counted from the connection's first moment or from the request's first byte on a kept-alive
  connection. Past it the client gets 408 and the connection is closed; a request already being
  answered is not affected (the compute deadline is `deadline_s`).
- A cap on open connections per HTTP worker (`max_connections`): the next one gets 503 with
  Retry-After and is closed before anything is read from it.

Both answers are written here, below the app, in the service's error shape.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import get_settings

log = logging.getLogger("app.protocol")


def _raw_error(status: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"code": code, "message": message, "details": []})
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + extra
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class BoundedProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.read_timeout = settings.request_read_timeout_s
        self.max_connections = settings.max_connections
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            message = (
                f"This server holds its maximum of {self.max_connections} open connections "
                "(JACOBIAN_MAX_CONNECTIONS); retry shortly"
            )
            transport.write(
                _raw_error(b"503 Service Unavailable", "too_many_connections", message, b"retry-after: 1\r\n")
            )
            transport.close()
            return
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_deadline is None:  # the next request on a kept-alive connection
            self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_too_slow)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_too_slow(self) -> None:
        self._read_deadline = None
        answering = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
        if self.transport.is_closing() or answering:
            return
        message = (
            f"The request did not arrive in full within {self.read_timeout:g} s "
            "(JACOBIAN_REQUEST_READ_TIMEOUT_S); send it faster or smaller"
        )
        self.transport.write(_raw_error(b"408 Request Timeout", "request_timeout", message))
        self.transport.close()
