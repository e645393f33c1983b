"""app/http/reading.py against the served app: bodies over the limit are refused while they stream."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.support.clients import SEED
from tests.support.servers import LiveServer

MiB = 2**20


def raw_post(url: str, head: bytes, body_chunks: int, chunk: bytes) -> tuple[int, float]:
    """Send a body of body_chunks × chunk on a raw socket; return (status, seconds until the answer)."""
    host, port = url.removeprefix("http://").split(":")
    t = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head)
        try:
            for _ in range(body_chunks):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and stopped reading: what we want
        answer = s.recv(4096)
    return int(answer[9:12]), time.perf_counter() - t


@pytest.mark.parametrize("chunked", [False, True])
def test_64_mib_bodies_get_413_quickly(live_server: LiveServer, chunked: bool) -> None:
    chunk = b"[" + b"0.5," * 16383 + b"0.5],"  # ~64 KiB of JSON numbers
    n = 64 * MiB // len(chunk) + 1
    if chunked:
        head = (
            b"POST /jacobian HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        status, seconds = raw_post(live_server.url, head, n, framed)
    else:
        head = (
            b"POST /jacobian HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {n * len(chunk)}\r\n\r\n".encode()
        )
        status, seconds = raw_post(live_server.url, head, n, chunk)
    assert status == 413 and seconds < 10
    assert httpx.post(live_server.url + "/jacobian", json=SEED).status_code == 200
