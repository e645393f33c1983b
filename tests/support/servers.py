"""Servers that tests start as separate processes: the container's own start command on a free
loopback port. They die with the test run (app.lifeline), are reaped in `finally`, and a server
that exits on its own (a segfault, say) fails the test that saw it, with its log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from app import lifeline
from bench.servers import children as children
from bench.servers import free_port as free_port  # one helper for the tests and the bench
from bench.servers import tree as tree

ROOT = Path(__file__).parent.parent.parent


def dockerfile_cmd() -> list[str]:
    """The JSON-form CMD of the Dockerfile: what the container runs."""
    cmd = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert len(cmd) == 1, "Dockerfile needs exactly one CMD"
    parsed: list[str] = json.loads(cmd[0][4:])
    return parsed


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen  # type: ignore[type-arg]
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def assert_alive(self) -> None:
        code = self.proc.poll()
        assert code is None, f"the server died ({describe_exit(code)}); its log ends:\n{self.log_tail()}"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def start(tmp: Path, extra_env: dict[str, str] | None = None, ready_timeout_s: float = 180) -> LiveServer:
    """Start the server and wait until /health/ready says 200; the caller must `stop` it."""
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "JACOBIAN_HOST": "127.0.0.1",
        "JACOBIAN_PORT": str(port),
        **(extra_env or {}),
    }
    log = tmp / f"server-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(lifeline.command(dockerfile_cmd()), env=env, stdout=out, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + ready_timeout_s
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.url + "/health/ready", timeout=2).status_code == 200:
                return server
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(server, check=False)
            raise AssertionError(f"server did not become ready ({describe_exit(proc.poll())}):\n{server.log_tail()}")
        time.sleep(0.2)


def stop(server: LiveServer, check: bool = True) -> int:
    """SIGTERM, reap, and (with `check`) fail unless it ran until now and shut down cleanly."""
    died_before = server.proc.poll()
    if died_before is None:
        server.proc.terminate()
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    code = server.proc.returncode
    if check:
        assert died_before is None, f"the server had died ({describe_exit(died_before)}):\n{server.log_tail()}"
        # uvicorn drains, then re-raises SIGTERM so the exit status says why it stopped.
        assert code in (0, -signal.SIGTERM), f"unclean shutdown ({describe_exit(code)}):\n{server.log_tail()}"
    return code


@contextlib.contextmanager
def running(tmp: Path, extra_env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    server = start(tmp, extra_env)
    try:
        yield server
    finally:
        stop(server)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def tree_rss_mib(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(FileNotFoundError, RuntimeError):
            total += rss_mib(p)
    return total


def worker_pids(server: LiveServer) -> list[int]:
    """The HTTP workers: the supervisor's children that uvicorn spawned."""
    return [p for p in children(server.proc.pid) if "multiprocessing.spawn" in cmdline(p)]


def engine_pids(server: LiveServer) -> list[int]:
    return [
        p for p in tree(server.proc.pid) if "app.serve.engine_process" in cmdline(p) and "lifeline" not in cmdline(p)
    ]


def raw_post(url: str, path: str, body: bytes, hold_back: int = 0) -> socket.socket:
    """POST a JSON body on a socket of its own, all but its last `hold_back` bytes."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=60)
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    s.sendall(head.encode() + body[: len(body) - hold_back])
    return s
