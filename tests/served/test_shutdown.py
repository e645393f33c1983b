"""`python -m app` shutting down: a SIGTERM lets the request in flight finish, then every process
of the service exits and leaves no shared memory behind."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from app.service import codec
from tests.support import oracles, servers
from tests.support.helpers import metric, wait_until
from tests.support.oracles import assert_close


def json_body(X: np.ndarray, y: np.ndarray) -> bytes:
    return codec.encode_json({"X": X, "Y": y}, {"dtype": "float64"})


def in_progress_posts(url: str) -> float:
    return metric(httpx.get(url + "/metrics").text, "jacobian_requests_in_progress", method="POST")


def test_sigterm_finishes_a_request_in_flight_then_every_process_exits(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """The request is in flight for certain: its last byte is held back until after the SIGTERM."""
    server = servers.start(tmp_path)
    try:
        X, y = rng.normal(size=(64, 512)) * 0.1, rng.normal(size=512)
        body = json_body(X, y)
        s = servers.raw_post(server.url, "/jacobian", body, hold_back=1)
        wait_until(lambda: in_progress_posts(server.url) == 1, "the server is handling the request")
        processes = servers.tree(server.proc.pid)  # supervisor, workers, engine
        assert len(processes) >= 3
        server.proc.send_signal(signal.SIGTERM)
        s.sendall(body[-1:])
        answer = b""
        while chunk := s.recv(1 << 20):
            answer += chunk
        s.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), (head[:200], payload[:300])
        assert_close(np.array(orjson.loads(payload)["J"]), oracles.jacobian(X, y), 1e-9)
        # uvicorn drains, then re-raises SIGTERM so the exit status says why it stopped.
        assert server.proc.wait(30) in (0, -signal.SIGTERM), server.log_tail()
        assert "Application shutdown complete" in server.log.read_text()
        # Every process exits (multiprocessing's resource tracker a moment after the supervisor).
        wait_until(lambda: not [p for p in processes if servers.cmdline(p)], "every process has exited", 15)
        assert list(Path("/dev/shm").glob(f"jacobian-{server.proc.pid}-*")) == []  # no shared memory left
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url + "/health/live", timeout=2)
    finally:
        servers.stop(server, check=False)
