"""The servers the benchmark compares: the service as served (`python -m app`) and the floor,
each started on loopback, ready when /health/ready says 200, and stopped after."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app import lifeline

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen

    def pids(self) -> list[int]:
        """The server's processes: for the project, supervisor, workers and engine."""
        return tree(self.proc.pid)


def children(pid: int) -> list[int]:
    """Direct child process ids (Linux /proc)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):
            kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (the tests use this too)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    """A loopback port nothing holds now (offsets from one port can hit a client's ephemeral port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(name: str, cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[Server]:
    # lifeline: the server dies with this process, even if it is killed before `finally` runs.
    env = {**os.environ, "JACOBIAN_PORT": str(port), "JACOBIAN_LOG_LEVEL": "warning", **(env or {})}
    proc = subprocess.Popen(lifeline.command(cmd), cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{name} did not become ready")
            time.sleep(0.2)
        yield Server(name, port, proc)
    finally:
        proc.terminate()
        proc.wait(30)


PROJECT = [sys.executable, "-m", "app"]  # the supervisor, as served

# What a process that imported `app` has changed of TensorFlow's start-up environment
# (app/tensorflow_env.py), set back: the model floors run with TensorFlow's defaults.
TENSORFLOW_DEFAULTS = {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "ALL", "TF_CPU_ALLOCATOR_USE_BFC": "false"}


def floor_cmd(port: int, workers: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.floor:app",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
