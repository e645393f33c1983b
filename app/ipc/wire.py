"""The wire between HTTP workers and engine processes: messages over a Unix-domain socket.
No TensorFlow, no web imports.

A message is ``prefix | header | payload``: the prefix gives the header's and the payload's byte
counts, the header is JSON (orjson), and the payload is the arrays' raw bytes one after another,
their dtypes and shapes named in the header. Each engine listens on one socket (`Server`, a
`selectors` loop: every worker's requests reach one batcher); each worker holds one asyncio
connection to it (`app.ipc.client`). When an engine dies, the kernel closes its end and every
worker sees end-of-file at once.

Inputs or answers larger than `app.ipc.shm.INLINE_MAX` bytes go through shared memory instead.
Messages are typed (`app.ipc.messages`); the header carries their fields and `kind`.

Why a plain Unix socket (the standard library's `socket`, `selectors` and asyncio streams) and not
ZeroMQ, which an earlier version used: its I/O threads add four thread hand-offs to every round
trip, which made it several times slower than a Unix socket for small requests (numbers in
bench/measurements.md). Fan-in, the one thing ZeroMQ gave beyond that, is one `selectors` loop.
Big payloads avoid both: the shared-memory path copies once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import selectors
import socket
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.ipc import messages
from app.ipc.messages import ArraySpec

PREFIX = struct.Struct("<II")  # header bytes, payload bytes
RECV_BYTES = 1 << 22  # big inputs (megabytes of X and V) in few calls
SEND_TIMEOUT_S = 10.0  # a worker that stops reading this long is cut off, not waited for


def endpoint(runtime_dir: str, index: int) -> str:
    return os.path.join(runtime_dir, f"engine-{index}.sock")


def frames(message: messages.Message, arrays: list[np.ndarray] | tuple[np.ndarray, ...] = ()) -> list[Any]:
    """One message as buffers to write one after another (the arrays are not copied here)."""
    head = orjson.dumps(message)  # a dataclass: its fields, `kind` among them
    bufs = [np.ascontiguousarray(a).data.cast("B") for a in arrays]
    return [PREFIX.pack(len(head), sum(b.nbytes for b in bufs)), head, *bufs]


def specs(arrays: list[np.ndarray] | tuple[np.ndarray, ...]) -> list[ArraySpec]:
    return [(_NAMES.get(a.dtype) or _NAMES.setdefault(a.dtype, a.dtype.name), list(a.shape)) for a in arrays]


_NAMES: dict[np.dtype[Any], str] = {}  # NumPy works out `dtype.name` in Python, µs per call


def split(payload: bytes, array_specs: list[ArraySpec]) -> list[np.ndarray]:
    """The arrays a payload holds, as read-only views of it."""
    out, offset = [], 0
    for dtype, shape in array_specs:
        dt = np.dtype(dtype)
        count = math.prod(shape)
        out.append(np.frombuffer(payload, dt, count, offset).reshape(shape))
        offset += count * dt.itemsize
    if offset != len(payload):
        raise ValueError(f"payload of {len(payload)} bytes does not hold arrays {array_specs}")
    return out


async def read_message(reader: asyncio.StreamReader) -> tuple[messages.Message, bytes]:
    """One message from an asyncio stream (a worker's connection), and its payload."""
    head_len, payload_len = PREFIX.unpack(await reader.readexactly(PREFIX.size))
    message = messages.parse(orjson.loads(await reader.readexactly(head_len)))
    return message, (await reader.readexactly(payload_len) if payload_len else b"")


@dataclass(frozen=True)
class Received:
    peer: socket.socket
    message: messages.Message
    payload: bytes


class Server:
    """An engine's end of the wire: one listening socket, any number of workers connected.

    Single-threaded: `receive` waits for input and returns the whole messages that arrived,
    `send` writes one answer (blocking, but never longer than `SEND_TIMEOUT_S`)."""

    def __init__(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by the engine this one replaces
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.gone: set[socket.socket] = set()  # peers dropped since the caller last looked
        # Read into one buffer: `recv(n)` allocates n bytes per call, and 4 MiB is an mmap and
        # page faults each time (30 µs of a small request's round trip here).
        self._scratch = memoryview(bytearray(RECV_BYTES))

    def receive(self, timeout: float) -> list[Received]:
        received: list[Received] = []
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                self._accept()
                continue
            conn: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                size = conn.recv_into(self._scratch)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                size = 0
            if not size:
                self.drop(conn)
                continue
            buffer: bytearray = key.data
            buffer += self._scratch[:size]
            received += self._parse(conn, buffer)
        return received

    def send(self, peer: socket.socket, message: messages.Message, arrays: list[np.ndarray] | None = None) -> None:
        if peer in self.gone or peer.fileno() < 0:
            return
        try:
            peer.sendall(b"".join(frames(message, arrays or [])))
        except OSError:  # the worker died or stopped reading: its requests are lost with it
            self.drop(peer)

    def drop(self, peer: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(peer)
        peer.close()
        self.gone.add(peer)

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.settimeout(SEND_TIMEOUT_S)  # recv is only called when the selector says data is there
        self.selector.register(conn, selectors.EVENT_READ, bytearray())

    @staticmethod
    def _parse(conn: socket.socket, buffer: bytearray) -> list[Received]:
        received, start = [], 0
        while len(buffer) - start >= PREFIX.size:
            head_len, payload_len = PREFIX.unpack_from(buffer, start)
            head_end = start + PREFIX.size + head_len
            end = head_end + payload_len
            if len(buffer) < end:
                break
            with memoryview(buffer) as view:  # released before the buffer is trimmed below
                message = messages.parse(orjson.loads(view[start + PREFIX.size : head_end]))
                received.append(Received(conn, message, bytes(view[head_end:end])))
            start = end
        del buffer[:start]
        return received
