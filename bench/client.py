"""The benchmark's load: wrk (the C load generator the issues measured with) when installed, else a
lean Python HTTP/1.1 keep-alive client; the load generator must cost less than the servers."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

import numpy as np
import orjson

JSON, NPZ = "application/json", "application/x-npz"


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def raw_request(path: str, doc: dict[str, Any], accept: str = JSON) -> bytes:
    body = orjson.dumps(doc)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {JSON}\r\nAccept: {accept}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def raw_npz_request(path: str, arrays: dict[str, np.ndarray], accept: str = NPZ) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    body = buf.getvalue()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {NPZ}\r\nAccept: {accept}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def raw_v2_request(model: str, arrays: dict[str, np.ndarray]) -> bytes:
    """An Open Inference Protocol request with every input and output as binary tensor data."""
    datatype = {"float32": "FP32", "float64": "FP64"}
    inputs = [
        {
            "name": k,
            "shape": list(a.shape),
            "datatype": datatype[a.dtype.name],
            "parameters": {"binary_data_size": a.nbytes},
        }
        for k, a in arrays.items()
    ]
    json_part = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    body = json_part + b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(json_part)}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def problem(A: int, F: int, dtype: str = "float32", seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(size=(A, F)).tolist(), "Y": (rng.normal(size=F) / np.sqrt(F)).tolist(), "dtype": dtype}


async def latency(port: int, raw: bytes, n: int) -> float:
    """Median seconds per request, one client."""
    conn = await Connection.open(port)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        status, _ = await conn.send(raw)
        times.append(time.perf_counter() - t)
        assert status == 200, status
    conn.close()
    return statistics.median(times)


def settled(port: int, raw: bytes, requests: int = 4, patience_s: float = 30.0) -> None:
    """Send `raw` a few times untimed, then wait until the server has no XLA compile in flight
    (/health/ready `xla_compiling`; the floor has none): the timed requests then measure the
    steady state, not a one-off compile running beside them on the same two cores."""
    asyncio.run(latency(port, raw, requests))
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as r:
            if not json.loads(r.read()).get("xla_compiling"):
                return
        time.sleep(0.1)


WRK = shutil.which("wrk")  # C load generator, as the issues measured with; `make bench` installs it


def wrk(port: int, raw: bytes, connections: int, seconds: float) -> tuple[float, float]:
    """(requests per second, median latency in seconds) from wrk posting `raw`'s body."""
    assert WRK is not None
    head, body = raw.split(b"\r\n\r\n", 1)
    path = head.split(b" ")[1].decode()
    headers = "".join(
        f'wrk.headers["{k}"] = "{v}"\n'
        for k, v in (line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
        if k.lower() not in ("host", "content-length")
    )
    with tempfile.TemporaryDirectory() as tmp:
        body_file, script = os.path.join(tmp, "body"), os.path.join(tmp, "post.lua")
        with open(body_file, "wb") as f:
            f.write(body)  # read back by the script as bytes: npz and V2 binary bodies are not text
        with open(script, "w") as f:
            f.write(
                f'wrk.method = "POST"\n{headers}local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
            )
        out = subprocess.run(
            [
                WRK,
                "-t1",
                f"-c{connections}",
                f"-d{max(seconds, 1):g}s",
                "--latency",
                "-s",
                script,
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"50%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rate, float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def load(port: int, raw: bytes, connections: int, seconds: float) -> float:
    """Requests per second: wrk when installed, else the Python client below."""
    if WRK is not None:
        return wrk(port, raw, connections, seconds)[0]
    return asyncio.run(throughput(port, raw, connections, seconds))


def one_client(port: int, raw: bytes, n: int, seconds: float) -> float:
    """Median seconds per request from one connection: wrk's when installed, else the Python client's."""
    if WRK is not None:
        return wrk(port, raw, 1, seconds)[1]
    return asyncio.run(latency(port, raw, n))


async def throughput(port: int, raw: bytes, connections: int, seconds: float) -> float:
    """Requests per second from `connections` concurrent keep-alive clients."""
    conns = [await Connection.open(port) for _ in range(connections)]
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(conn: Connection) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            status, _ = await conn.send(raw)
            assert status == 200, status
            done += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t
    for c in conns:
        c.close()
    return done / elapsed
