"""`make bench`: the service against its floor (bench/floor.py), interleaved in one run.

Starts both on loopback (one uvicorn worker each), drives them with wrk (`bench.client`), and
reports each goal as a ratio project/floor measured in alternating rounds (`bench.report`).
Writes bench/results.md and bench/latency.png (or --out DIR) and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from jacobian_client import Client

from bench import memory, onednn
from bench.client import (
    JSON,
    NPZ,
    Connection,
    latency,
    load,
    one_client,
    problem,
    raw_npz_request,
    raw_request,
    raw_v2_request,
    settled,
)
from bench.report import Row, machine, plot, table
from bench.servers import PROJECT, ROOT, Server, floor_cmd, free_port, server, status_mib


def alternate(mine: Callable[[], float], theirs: Callable[[], float], rounds: int) -> tuple[float, float, float]:
    """Measure both, alternating which goes first; the medians and the median per-round ratio."""
    a_vals, b_vals, ratios = [], [], []
    for r in range(rounds):
        if r % 2:
            a_vals.append(mine())
            b_vals.append(theirs())
        else:
            b_vals.append(theirs())
            a_vals.append(mine())
        ratios.append(a_vals[-1] / b_vals[-1])
    return statistics.median(a_vals), statistics.median(b_vals), statistics.median(ratios)


def interleaved(measure: Callable[[Server], float], project: Server, floor: Server, rounds: int) -> tuple:
    """The project against the floor, alternating which goes first."""
    return alternate(lambda: measure(project), lambda: measure(floor), rounds)


def latency_row(
    goal: str, path: str, doc: dict, accept: str, n: int, target: float, p: Server, f: Server, rounds: int
) -> Row:
    raw = raw_request(path, doc, accept)
    for s in (p, f):
        settled(s.port, raw)
    pv, fv, ratio = interleaved(lambda s: asyncio.run(latency(s.port, raw, n)), p, f, rounds)
    return Row(goal, f"{pv * 1e3:.2f} ms", f"{fv * 1e3:.2f} ms", ratio, f"≤ {target}×", ratio <= target)


def product_rows(p: Server, f: Server, quick: bool) -> list[Row]:
    """/vjp and /jvp at sizes /jacobian refuses, npz, against the floor's closed forms."""
    rounds, n = (1, 3) if quick else (5, 10)
    rng = np.random.default_rng(0)
    rows = []
    cases = [("/vjp", 1024, 2048, 1), ("/vjp", 1024, 2048, 8), ("/jvp", 1024, 1024, 1), ("/jvp", 1024, 1024, 2)]
    for path, A, F, K in [(c[0], 16, 32, c[3]) for c in cases] if quick else cases:
        X = rng.normal(size=(A, F)).astype(np.float32)
        y = (rng.normal(size=F) / np.sqrt(F)).astype(np.float32)
        extra = {"U": rng.normal(size=(K, A))} if path == "/vjp" else {"V": rng.normal(size=(K, A, F))}
        arrays = {"X": X, "Y": y, **{k: v.astype(np.float32) for k, v in extra.items()}}
        raw = raw_npz_request(path, arrays)
        for s in (p, f):
            settled(s.port, raw)
        pv, fv, ratio = interleaved(lambda s: asyncio.run(latency(s.port, raw, n)), p, f, rounds)
        rows.append(
            Row(
                f"{path} {A}×{F} float32, K={K}, npz",
                f"{pv * 1e3:.2f} ms",
                f"{fv * 1e3:.2f} ms",
                ratio,
                "≤ 1.5×",
                ratio <= 1.5,
            )
        )
    return rows


def server_rows(p: Server, f: Server, quick: bool) -> list[Row]:
    rounds, n, secs = (1, 5, 0.3) if quick else (5, 200, 2.0)
    big = (4, 16) if quick else (64, 512)
    hess = (3, 4) if quick else (12, 48)
    rows = []
    seed_raw = raw_request("/jacobian", problem(2, 4))
    settled(p.port, seed_raw)  # the operation's first use (tracing, calibration) is not the load's
    for conns in (8, 64):
        pv, fv, ratio = interleaved(lambda s: load(s.port, seed_raw, conns, secs), p, f, rounds)
        rows.append(
            Row(
                f"2×4 throughput, {conns} connections, 1 HTTP worker",
                f"{pv:.0f} req/s",
                f"{fv:.0f} req/s",
                ratio,
                "≥ 0.8×",
                ratio >= 0.8,
            )
        )
    raw = raw_request("/jacobian", problem(2, 4))
    pv, fv, ratio = interleaved(lambda s: one_client(s.port, raw, n * 2, secs), p, f, rounds)
    rows.append(
        Row(
            "2×4 latency, one client",
            f"{pv * 1e3:.2f} ms",
            f"{fv * 1e3:.2f} ms",
            ratio,
            "≤ floor + 0.7 ms",
            pv <= fv + 0.0007,
        )
    )
    big_n = max(3, n // 10)
    rows.append(
        latency_row(
            f"{big[0]}×{big[1]} float32 Jacobian, JSON", "/jacobian", problem(*big), JSON, big_n, 1.2, p, f, rounds
        )
    )
    rows.append(
        latency_row(
            f"{big[0]}×{big[1]} float32 Jacobian, npz", "/jacobian", problem(*big), NPZ, big_n, 1.3, p, f, rounds
        )
    )
    rows.append(
        latency_row(
            f"Hessian {hess[0]}×{hess[1]} float64, npz",
            "/hessian",
            problem(*hess, "float64"),
            NPZ,
            big_n,
            1.3,
            p,
            f,
            rounds,
        )
    )
    return rows


def protocol_rows(p: Server, quick: bool) -> list[Row]:
    """The 2×4 seed over the Open Inference Protocol (binary tensor data) against the native npz
    endpoint, on the same server: what the protocol's envelope costs."""
    rounds, secs = (1, 0.3) if quick else (5, 2.0)
    doc = problem(2, 4)
    arrays = {"X": np.asarray(doc["X"], np.float32), "Y": np.asarray(doc["Y"], np.float32)}
    native, v2 = raw_npz_request("/jacobian", arrays), raw_v2_request("jacobian", arrays)
    v2_rate, native_rate, ratio = alternate(
        lambda: load(p.port, v2, 8, secs), lambda: load(p.port, native, 8, secs), rounds
    )
    return [
        Row(
            "2×4 throughput, V2 binary vs native npz, 8 connections",
            f"{v2_rate:.0f} req/s",
            f"{native_rate:.0f} req/s",
            ratio,
            "≥ 0.9×",
            ratio >= 0.9,
        )
    ]


def client_rows(p: Server, quick: bool) -> list[Row]:
    """The 2×4 seed through `jacobian_client.Client` against the same npz post written by hand with
    httpx (encode, post, decode): what the client adds, one client, on one server."""
    n, rounds = (20, 1) if quick else (400, 5)
    doc = problem(2, 4)
    X, Y = np.asarray(doc["X"], np.float32), np.asarray(doc["Y"], np.float32)
    url = f"http://127.0.0.1:{p.port}"

    def by_hand() -> float:
        times = []
        with httpx.Client() as http:
            for _ in range(n):
                start = time.perf_counter()
                buf = io.BytesIO()
                np.savez(buf, X=X, Y=Y)
                r = http.post(url + "/jacobian", content=buf.getvalue(), headers={"content-type": NPZ, "accept": NPZ})
                with np.load(io.BytesIO(r.content)) as z:
                    z["W"], z["J"]
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    def with_client() -> float:
        times = []
        with Client(url) as client:
            for _ in range(n):
                start = time.perf_counter()
                client.jacobian(X, Y)
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    m, b, ratio = alternate(with_client, by_hand, rounds)
    return [
        Row(
            "2×4 seed through Client vs a bare httpx npz post, one client",
            f"{m * 1e3:.2f} ms",
            f"{b * 1e3:.2f} ms",
            ratio,
            "≤ 1.2×",
            ratio <= 1.2,
        )
    ]


def idle_row(p: Server) -> Row:
    """What the service holds at rest, its first operation traced: every process's RSS."""
    idle = {pid: status_mib(pid, "VmRSS") for pid in p.pids()}
    listed = ", ".join(f"{v:.0f}" for v in sorted(idle.values()))
    return Row(
        f"idle RSS, whole service (1 worker): {listed} MiB", f"{sum(idle.values()):.0f} MiB", "-", 0.0, "reported", True
    )


def scaling_rows(one_worker: Server, quick: bool) -> list[Row]:
    """1 → N HTTP workers (the default: one per core), one engine: what more workers buy (on 2
    cores they compete with it); and the default service against the floor with as many workers."""
    from app.config import Settings

    secs, rounds = (0.3, 1) if quick else (2.0, 3)
    raw = raw_request("/jacobian", problem(2, 4))
    settled(one_worker.port, raw)  # the operation's first use (tracing, calibration) is not the load's
    one = statistics.median(load(one_worker.port, raw, 64, secs) for _ in range(rounds))
    workers = Settings().workers
    with (
        server("project-default", PROJECT, free_port()) as p,
        server("floor-default", floor_cmd(port := free_port(), workers), port) as f,
    ):
        settled(p.port, raw)
        many = statistics.median(load(p.port, raw, 64, secs) for _ in range(rounds))
        pv, fv, default_ratio = interleaved(lambda s: load(s.port, raw, 8, secs), p, f, rounds)
    return [
        Row(
            f"2×4 throughput, 8 connections, default workers ({workers}) vs the floor with as many",
            f"{pv:.0f} req/s",
            f"{fv:.0f} req/s",
            default_ratio,
            "≥ 0.55×",
            default_ratio >= 0.55,
        ),
        Row(
            f"2×4 throughput, 64 connections, {workers} HTTP workers vs 1",
            f"{many:.0f} req/s",
            f"{one:.0f} req/s",
            many / one,
            "≥ 1.0×",
            many / one >= 1.0,
        ),
    ]


def curve(p: Server, f: Server, quick: bool) -> list[tuple[int, float, float]]:
    sizes = [(2, 4), (4, 8)] if quick else [(2, 4), (8, 32), (16, 64), (32, 128), (32, 256), (64, 512)]
    points = []
    for A, F in sizes:
        raw = raw_request("/jacobian", problem(A, F))
        n = 3 if quick else max(5, 200 // (1 + A * A * F // 20000))
        pv, fv, _ = interleaved(lambda s: asyncio.run(latency(s.port, raw, n)), p, f, 1 if quick else 3)
        points.append((A * A * F, pv, fv))
    return points


def memory_rows(p: Server, quick: bool, max_elements: int) -> list[Row]:
    # The largest Jacobian the default npz limit admits: A·A·F = max_elements.
    A, F = (8, 16) if quick else (256, 1024)
    assert max_elements >= A * A * F
    raw = raw_request("/jacobian", problem(A, F), NPZ)
    idle = memory.service_bytes(p.proc.pid)
    with memory.PeakSampler(p.proc.pid) as sampler:
        asyncio.run(latency(p.port, raw, 1))
    peak = (sampler.peak - idle) / 2**20
    out_mib = A * A * F * 4 / 2**20
    rows = [
        Row(
            f"peak memory, {A}×{F} npz ({out_mib:.0f} MiB out; all processes, shared memory once)",
            f"+{peak:.0f} MiB",
            "-",
            peak / out_mib,
            "≤ 3× output",
            peak <= 3 * out_mib,
        )
    ]
    rng = np.random.default_rng(1)
    mixed = [
        raw_request(
            ("/jacobian", "/hessian")[i % 2],
            problem(int(rng.integers(1, 12)), int(rng.integers(1, 24)), ("float32", "float64")[i % 3 == 0], i),
        )
        for i in range(64)
    ]

    async def soak(n: int) -> None:
        conns = [await Connection.open(p.port) for _ in range(8)]

        async def worker(k: int) -> None:
            for i in range(k, n, 8):
                status, _ = await conns[k].send(mixed[i % len(mixed)])
                assert status == 200

        await asyncio.gather(*(worker(k) for k in range(8)))

    asyncio.run(soak(100 if quick else 300))
    before = memory.service_bytes(p.proc.pid) / 2**20
    asyncio.run(soak(300 if quick else 3000))
    growth = memory.service_bytes(p.proc.pid) / 2**20 - before
    rows.append(
        Row(
            f"RSS growth over {300 if quick else 3000} mixed requests",
            f"{growth:+.1f} MiB",
            "-",
            growth / 64,
            "< 64 MiB",
            growth < 64,
        )
    )
    return rows


def engine_rows(quick: bool) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    from app.engine.derivatives import Engine

    engine = Engine()
    sizes = [(4, 16)] if quick else [(64, 512), (256, 1024)]
    rows = []
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        jax = None
    for A, F in sizes:
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(A, F)).astype(np.float32), rng.normal(size=F).astype(np.float32)
        n = 3 if quick or A > 100 else 30
        settle(engine, lambda: run_policy(engine, "jacobian", X[None], y[None]))
        tf_t = best_of(lambda: run_policy(engine, "jacobian", X[None], y[None]), n)

        def closed() -> np.ndarray:
            z = X @ y
            e = np.exp(z - z.max())
            p = e / e.sum()
            return (np.eye(A, dtype=np.float32)[:, :, None] - p[None, :, None]) * y[None, None, :]

        np_t = best_of(closed, n)
        rows.append(
            Row(
                f"engine {A}×{F} Jacobian vs NumPy closed form",
                f"{tf_t * 1e3:.2f} ms",
                f"{np_t * 1e3:.2f} ms",
                tf_t / np_t,
                "≤ 1.5×",
                tf_t / np_t <= 1.5,
            )
        )
        if jax is not None:
            jac = jax.jit(jax.jacrev(lambda X_, y_: jax.nn.log_softmax(X_ @ y_)))
            Xj, yj = jnp.asarray(X), jnp.asarray(y)
            jax_t = best_of(lambda: np.asarray(jac(Xj, yj)), n)
            rows.append(
                Row(
                    f"engine {A}×{F} Jacobian vs jax.jacrev (jit)",
                    f"{tf_t * 1e3:.2f} ms",
                    f"{jax_t * 1e3:.2f} ms",
                    tf_t / jax_t,
                    "≤ 1.5×",
                    tf_t / jax_t <= 1.5,
                )
            )
    if jax is not None and not quick:
        jax.config.update("jax_enable_x64", True)
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(16, 64)), rng.normal(size=64)
        settle(engine, lambda: run_policy(engine, "hessian", X[None], y[None]))
        tf_t = best_of(lambda: run_policy(engine, "hessian", X[None], y[None]), 20)
        hess = jax.jit(jax.hessian(lambda X_, y_: jax.nn.log_softmax(X_ @ y_)))
        Xj, yj = jnp.asarray(X), jnp.asarray(y)
        jax_t = best_of(lambda: np.asarray(hess(Xj, yj)), 20)
        rows.append(
            Row(
                "engine Hessian 16×64 float64 vs jax.hessian (jit)",
                f"{tf_t * 1e3:.2f} ms",
                f"{jax_t * 1e3:.2f} ms",
                tf_t / jax_t,
                "≤ 1×",
                tf_t / jax_t <= 1.0,
            )
        )
    return rows + product_scaling_rows(engine, quick)


def settle(engine: Any, call: Callable[[], Any]) -> None:
    """A shape's first uses (tracing, calibration, XLA's compile in the background) before it is
    timed, as the served rows' `settled` does: a compile beside the timed calls is not their time."""
    for _ in range(3):
        call()
        engine.wait_for_compiles()


def run_policy(engine: Any, op: str, *rows: np.ndarray) -> Any:
    """The built-in model's `op` in X on its rows (X (N, A, F), Y (N, F), and U or V), as the
    service calls it (`app.service.front`)."""
    from app.calls import Call

    single = op == "vjp" and rows[2].shape[1] == 1
    call = Call(op, ("X",), ("W",), single=single, dtype=rows[0].dtype.name)
    return engine.run(call, *rows, model="policy")


def product_scaling_rows(engine: Any, quick: bool) -> list[Row]:
    """The products' cost grows with A·F, not A²·F: 4× the elements, at most 6× the time."""
    rng = np.random.default_rng(1)
    small, big = ((16, 32), (32, 64)) if quick else ((512, 1024), (1024, 2048))
    rows = []
    for op in ("vjp", "jvp"):
        times = []
        for A, F in (small, big):
            X = rng.normal(size=(1, A, F)).astype(np.float32)
            Y = rng.normal(size=(1, F)).astype(np.float32)
            other = rng.normal(size=(1, 1, A) if op == "vjp" else (1, 1, A, F)).astype(np.float32)
            settle(engine, lambda: run_policy(engine, op, X, Y, other))
            times.append(best_of(lambda: run_policy(engine, op, X, Y, other), 3 if quick else 10))
        ratio = times[1] / times[0]
        rows.append(
            Row(
                f"engine /{op} {big[0]}×{big[1]} vs {small[0]}×{small[1]} (4× the elements)",
                f"{times[1] * 1e3:.2f} ms",
                f"{times[0] * 1e3:.2f} ms",
                ratio,
                "≤ 6×",
                ratio <= 6,
            )
        )
    return rows


def best_of(fn: Callable[[], object], n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


SERVED_ONLY = {name: cfg for name, cfg in onednn.CONFIGS.items() if name.endswith("(served)")}  # the smoke test's
KSERVE_PYTHON = ROOT / "bench" / ".kserve" / "bin" / "python"  # `make bench` builds it


@contextlib.contextmanager
def kserve_server(port: int) -> Iterator[subprocess.Popen | None]:
    """KServe 0.21 serving the same Jacobian (`bench.kserve_model`), in its own virtualenv; None
    when that is not built (`make bench` builds it)."""
    if not KSERVE_PYTHON.exists():
        yield None
        return
    cmd = [str(KSERVE_PYTHON), "-m", "bench.kserve_model", "--http_port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/policy", timeout=2) as r,
            ):
                if r.status == 200:
                    break
            time.sleep(0.3)
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def kserve_rows(project: Server, quick: bool) -> list[Row]:
    """One client's 2×4 Jacobian latency against KServe serving `tape.jacobian` in a `tf.function`
    (the same numbers; its V1 protocol), interleaved."""
    body = problem(2, 4)
    ours, theirs = raw_request("/jacobian", body), raw_request("/v1/models/policy:predict", body)
    with kserve_server(port := free_port()) as proc:
        if proc is None:
            return [Row("2×4 latency, one client, vs KServe 0.21", "—", "not built", 0.0, "< 1×", False)]
        rounds, seconds = (1, 0.3) if quick else (5, 2.0)
        settled(project.port, ours)
        asyncio.run(latency(port, theirs, 20))
        kserve = Server("kserve", port, proc)
        pv, kv, ratio = alternate(
            lambda: one_client(project.port, ours, 200, seconds),
            lambda: one_client(kserve.port, theirs, 200, seconds),
            rounds,
        )
    return [
        Row(
            "2×4 latency, one client, vs KServe 0.21",
            f"{pv * 1e3:.2f} ms",
            f"{kv * 1e3:.2f} ms",
            ratio,
            "< 1×",
            ratio < 1,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and short runs (the smoke test)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench")
    ap.add_argument("--port", type=int, default=8100)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from app.config import Settings

    settings = Settings()
    with (
        server("project", PROJECT, args.port, {"JACOBIAN_WORKERS": "1"}) as project,
        server("floor", floor_cmd(floor_port := free_port()), floor_port) as floor,
    ):
        settled(project.port, raw_request("/jacobian", problem(2, 4)))
        rows = [idle_row(project)]
        rows += server_rows(project, floor, args.quick)
        rows += product_rows(project, floor, args.quick)
        rows += protocol_rows(project, args.quick)
        rows += client_rows(project, args.quick)
        rows += kserve_rows(project, args.quick)
        points = curve(project, floor, args.quick)
        rows += memory_rows(project, args.quick, settings.max_output_elements)
        rows += scaling_rows(project, args.quick)
    rows += engine_rows(args.quick)

    plot(points, args.out / "latency.png")
    report = (
        f"# Benchmark: project vs floor\n\nMachine: {machine()}. {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        f" XLA: {Settings().xla}.\n\nRatios are project/floor from one interleaved run"
        " (throughput: project/floor, higher is better; times: lower is better).\n\n"
        + table(rows)
        + "\n\n![latency against output size](latency.png)\n\n"
        + "## Memory budget: estimate against measured peak (`python -m bench.memory`)\n\n"
        + "Each operation on a fresh service (one worker, XLA off), one npz request at a time; memory of all "
        + "the service's processes, shared memory counted once.\n\n"
        + memory.table(memory.run(free_port(), memory.QUICK if args.quick else memory.SIZES))
        + "\n\n"
        + "## oneDNN's settings: what they cost or save (`python -m bench.onednn`)\n\n"
        + "TensorFlow's oneDNN AVX-512 matmul segfaults on float32 Jacobians (README, Troubleshooting); "
        + "the service holds oneDNN to AVX2 and uses TensorFlow's BFC CPU allocator. Each cell is its own process.\n\n"
        + (onednn.table(onednn.SHAPES[:1], ("float64",), SERVED_ONLY) if args.quick else onednn.table())
        + "\n"
    )
    (args.out / "results.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
