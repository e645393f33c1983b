"""`python -m app`: the supervisor. It starts one engine process per device (`app.serve.engine_process`)
and `JACOBIAN_WORKERS` HTTP worker processes (uvicorn, `app.http.app:app`, no TensorFlow) sharing one
listening socket; restarts any of them that dies; and on SIGTERM lets the workers finish what
is in flight, then stops the engines, and removes its shared-memory files and runtime directory.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from app import lifeline, system
from app.config import Settings, get_settings
from app.http.connection import BoundedProtocol
from app.ipc import shm
from app.serve import logs, rundir

log = logging.getLogger("app.supervisor")


def engine_devices(settings: Settings) -> list[str | None]:
    """One entry per engine: a GPU index for CUDA_VISIBLE_DEVICES, or None for the CPU."""
    if settings.devices:
        return [d.strip() for d in settings.devices.split(",") if d.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()] or [None]
    gpus = sorted(p.name for p in Path("/proc/driver/nvidia/gpus").glob("*"))
    return [str(i) for i in range(len(gpus))] or [None]


class EngineProcess:
    def __init__(self, index: int, device: str | None) -> None:
        self.index, self.device = index, device
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        if self.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.device
        cmd = [sys.executable, "-m", "app.serve.engine_process", str(self.index)]
        self.proc = subprocess.Popen(lifeline.command(cmd), env=env)

    def died(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout_s: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # it finishes what is queued, then exits
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor (restarts dead workers, SIGTERM/SIGINT handling), plus engines."""

    def __init__(self, config: uvicorn.Config, sockets: list[Any], engines: list[EngineProcess], settings: Settings):
        super().__init__(config, sockets)
        self.engines = engines
        self.settings = settings
        from prometheus_client import CollectorRegistry, Counter

        self.restarts = Counter("jacobian_engine_restarts", "Engine processes restarted", registry=CollectorRegistry())

    def init_processes(self) -> None:
        for engine in self.engines:
            engine.start()
        super().init_processes()

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for engine in self.engines:
            code = engine.died()
            if code is not None:
                log.error("engine %d (pid %s) died with status %s; restarting it", engine.index, engine.proc.pid, code)  # type: ignore[union-attr]
                self.restarts.inc()
                engine.start()
        workers = {p.pid for p in self.processes}
        super().keep_subprocess_alive()
        for pid in workers - {p.pid for p in self.processes}:
            self._forget_worker(pid)

    def _forget_worker(self, pid: int | None) -> None:
        from prometheus_client import multiprocess

        if pid is not None:
            gone = shm.sweep(self.settings.shm_dir, f"{self.settings.shm_prefix}-{pid}-")
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
            log.info("worker %d replaced; removed %d shared-memory files it left", pid, gone)

    def run(self) -> None:
        try:
            super().run()  # returns once the workers have drained and exited
        finally:
            for engine in self.engines:
                engine.stop()
            shm.sweep(self.settings.shm_dir, self.settings.shm_prefix + "-")


def main() -> None:
    base = get_settings()
    logs.configure(base.log_level)
    try:
        _remove_orphans(base)
        runtime = rundir.RunDir()
    except FileNotFoundError as err:  # tempfile found no writable directory
        sys.exit(
            f"{err.strerror}: the service needs a writable temporary directory (TMPDIR, else /tmp) for its "
            "sockets and metrics files. With a read-only root filesystem, mount a tmpfs there "
            "(docker run --read-only --tmpfs /tmp; Kubernetes: an emptyDir at /tmp)."
        )
    # Every process started from here reads these (pydantic-settings, prometheus_client).
    os.environ["JACOBIAN_RUNTIME_DIR"] = runtime.path
    os.environ["JACOBIAN_SHM_PREFIX"] = runtime.name
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(runtime.path, "metrics")
    os.mkdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    # One budget for every process, decided once (its default reads the cgroup limit).
    log.info("memory budget for requests in flight: %s bytes (%s)", f"{base.memory_budget_bytes:,}", budget_source())
    os.environ["JACOBIAN_MEMORY_BUDGET_BYTES"] = str(base.memory_budget_bytes)
    devices = engine_devices(base)
    os.environ["JACOBIAN_ENGINES"] = str(len(devices))
    get_settings.cache_clear()
    settings = get_settings()
    _check_shared_memory(settings)
    config = uvicorn.Config(
        "app.http.app:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=logs.uvicorn_log_config(settings.log_level),  # the workers' request log lines
        access_log=False,  # app.http.observability logs each request once, with its request id
        http=BoundedProtocol,  # deadlines for slow clients and a cap on connections
    )
    engines = [EngineProcess(i, d) for i, d in enumerate(devices)]
    log.info(
        "supervisor %d: %d engine(s) on %s, %d HTTP worker(s)",
        os.getpid(),
        len(engines),
        ", ".join(d or "CPU" for d in devices),
        settings.workers,
    )
    try:
        Supervisor(config, [config.bind_socket()], engines, settings).run()
    finally:
        runtime.close()


def budget_source() -> str:
    if "JACOBIAN_MEMORY_BUDGET_BYTES" in os.environ:
        return "JACOBIAN_MEMORY_BUDGET_BYTES"
    return system.describe_default()


def _remove_orphans(settings: Settings) -> None:
    """Shared-memory files and runtime directories of supervisors that were killed outright."""
    dirs, files = rundir.sweep_orphans(tempfile.gettempdir(), settings.shm_dir)
    if dirs or files:
        log.warning(
            "removed %d runtime director%s and %d shared-memory files left by a supervisor that was killed",
            dirs,
            "y" if dirs == 1 else "ies",
            files,
        )


def _check_shared_memory(settings: Settings) -> None:
    report = shm.shm_report(settings.shm_dir, settings.max_output_elements * 8)
    if not report["ok"]:
        log.warning(
            "%s has %d MiB free but the largest answer the limits admit is %d MiB: such answers will go "
            "through the socket instead (slower). In Docker, raise shm_size (docker-compose.yml).",
            report["dir"],
            report["free_bytes"] >> 20,
            report["needed_bytes"] >> 20,
        )
