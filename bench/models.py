"""`python -m bench.models` (part of `make bench`): the goals for users' own models, side by side
in one run, each a ratio against a floor measured in the same run.

- The service's `/models/mlp/jacobian` (B=256, float32, npz) and its parameter policy gradient
  (`vjp`, `wrt: ["variables"]`, `sum_batch`, B=4096), at its stored weights and at θ sent with the
  request, against the floor a user would write for the same SavedModel (bench/model_floor.py,
  which assigns θ), alternating requests, one worker each; and θ's cost against the same request
  without it.
- A push of the MLP's weights and the next predict, together (absolute: ≤ 50 ms).
- UM-Bridge's `Gradient` of one example of the MLP against the same vjp through the native JSON
  API (≤ 1.2×).
- A NUTS chain of 500 draws of the README's PyMC posterior, the model served through UM-Bridge,
  beside the same chain with the model local (bench/nuts.py; reported).
- The engine's Jacobian of the same MLP against `jax.jit(jax.vmap(jax.jacrev(f)))` on the same
  weights, in this process.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import nuts
from bench.servers import PROJECT, TENSORFLOW_DEFAULTS, server
from tests.support.model_oracles import variables
from tests.support.servers import free_port

NPZ = "application/x-npz"


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _timed(post: Callable[[], httpx.Response]) -> float:
    start = time.perf_counter()
    r = post()
    elapsed = time.perf_counter() - start
    assert r.status_code == 200, r.text[:300]
    return elapsed


def alternate(mine: Callable[[], float], theirs: Callable[[], float], rounds: int) -> tuple[float, float, float]:
    """Medians of each and the median of the per-round ratios, alternating which goes first."""
    a, b, ratios = [], [], []
    for r in range(rounds):
        pair = (mine(), theirs()) if r % 2 else tuple(reversed((theirs(), mine())))
        a.append(pair[0])
        b.append(pair[1])
        ratios.append(pair[0] / pair[1])
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


Rows = list[tuple[str, float, float, float, str]]


def served(repo: Path, rounds: int) -> tuple[Rows, list[tuple[str, int, int]], list[str]]:
    rng = np.random.default_rng(0)
    x256 = rng.normal(size=(256, 64)).astype(np.float32)
    x4096 = rng.normal(size=(4096, 64)).astype(np.float32)
    u4096 = rng.normal(size=(4096, 16)).astype(np.float32)
    env = {"JACOBIAN_MODEL_REPOSITORY": str(repo), "JACOBIAN_WORKERS": "1"}
    floor_env = TENSORFLOW_DEFAULTS | {"JACOBIAN_FLOOR_REPOSITORY": str(repo)}
    floor = [sys.executable, "-m", "uvicorn", "bench.model_floor:app", "--log-level", "warning", "--no-access-log"]
    p, f = free_port(), free_port()
    rows = []
    with (
        server("service", PROJECT, p, env) as service,
        server("floor", [*floor, "--port", str(f)], f, floor_env),
        httpx.Client(timeout=120) as http,
    ):
        mine_url, floor_url = f"http://127.0.0.1:{p}", f"http://127.0.0.1:{f}"
        headers = {"content-type": NPZ, "accept": NPZ}
        jac_body, floor_jac = _npz(**{"inputs/x": x256}), _npz(x=x256)
        pg_body = _npz(**{"inputs/x": x4096, "cotangents/y": u4096})
        floor_pg = _npz(**{"x": x4096, "u/y": u4096})
        # The learner's parameters (the stored ones, moved), with every request.
        theta = {k: (v * 1.01).astype(np.float32) for k, v in variables(repo / "mlp" / "1").items()}
        pg_theta = _npz(**{"inputs/x": x4096, "cotangents/y": u4096}, **{f"variables/{k}": v for k, v in theta.items()})
        floor_theta = _npz(x=x4096, **{"u/y": u4096}, **{f"theta/{i}": v for i, v in enumerate(theta.values())})
        pg_path = mine_url + "/models/mlp/vjp?wrt=variables&sum_batch=true"

        x1, u1 = x256[0].tolist(), u4096[0].tolist()
        um_gradient = {"name": "mlp", "outWrt": 0, "inWrt": 0, "input": [x1], "sens": u1}
        native_vjp = {"inputs": {"x": [x1]}, "cotangents": {"y": [u1]}, "wrt": ["x"]}

        def pg(body: bytes) -> Callable[[], float]:
            return lambda: _timed(lambda: http.post(pg_path, content=body, headers=headers))

        cases = [
            (
                "mlp Jacobian, B=256, float32 (npz)",
                lambda: _timed(lambda: http.post(mine_url + "/models/mlp/jacobian", content=jac_body, headers=headers)),
                lambda: _timed(lambda: http.post(floor_url + "/mlp/jacobian", content=floor_jac)),
                "≤ 1.3",
            ),
            (
                "mlp policy gradient (vjp in the variables, sum_batch), B=4096",
                pg(pg_body),
                lambda: _timed(lambda: http.post(floor_url + "/mlp/pg", content=floor_pg)),
                "≤ 1.3",
            ),
            (
                "mlp policy gradient at θ in the request, B=4096 (floor: assigns θ, then the same)",
                pg(pg_theta),
                lambda: _timed(lambda: http.post(floor_url + "/mlp/pg_at", content=floor_theta)),
                "≤ 1.3",
            ),
            ("the same at θ, against the service's own request without θ", pg(pg_theta), pg(pg_body), "≤ 1.15"),
            (
                "UM-Bridge Gradient of one example, against the same vjp through the native JSON API",
                lambda: _timed(lambda: http.post(mine_url + "/umbridge/Gradient", json=um_gradient)),
                lambda: _timed(lambda: http.post(mine_url + "/models/mlp/vjp", json=native_vjp)),
                "≤ 1.2",
            ),
        ]
        for name, mine, theirs, goal in cases:
            for _ in range(3):  # warm both
                mine(), theirs()
            m, t, ratio = alternate(mine, theirs, rounds)
            rows.append((name, m * 1e3, t * 1e3, ratio, goal))
        rows.append(push_then_predict(http, mine_url, "mlp", theta, {"x": x256}, rounds=min(20, 3 * rounds)))
        rows.append(unstacked(mine_url, theta, rng, rounds))
        # A smoke run (one round) measures two models' memory; `make bench`, every model's.
        memory_rows = memory(mine_url, service.proc.pid, MEMORY_MODELS if rounds > 1 else ("mlp", "wide"))
        nuts_lines = nuts.chains(mine_url, repo, draws=500 if rounds > 1 else 10)
    return rows, memory_rows, nuts_lines


def unstacked(
    url: str, theta: dict[str, np.ndarray], rng: np.random.Generator, rounds: int
) -> tuple[str, float, float, float, str]:
    """The rule's price: requests carrying their own θ run alone, never stacked. 8 clients posting
    small predicts (B=4) with θ, against the same without θ (stacked by the scheduler): seconds per
    request under that load, alternating the two loads; reported, no goal."""
    from concurrent.futures import ThreadPoolExecutor

    x = rng.normal(size=(4, 64)).astype(np.float32)
    bodies = {
        "theta": _npz(**{"inputs/x": x}, **{f"variables/{k}": v for k, v in theta.items()}),
        "plain": _npz(**{"inputs/x": x}),
    }
    headers = {"content-type": NPZ, "accept": NPZ}

    each = 40 if rounds > 1 else 5  # a smoke run's: a few

    def load(body: bytes, clients: int = 8) -> float:
        def client(_: int) -> None:
            with httpx.Client(timeout=60) as http:
                for _ in range(each):
                    assert http.post(url + "/models/mlp/predict", content=body, headers=headers).status_code == 200

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        return (time.perf_counter() - start) / (clients * each)

    load(bodies["theta"]), load(bodies["plain"])  # warm
    m, t, ratio = alternate(lambda: load(bodies["theta"]), lambda: load(bodies["plain"]), max(1, rounds // 6))
    name = "8 clients, mlp predict B=4: with θ (run alone) vs without (stacked), ms per request"
    return (name, m * 1e3, t * 1e3, ratio, "reported")


def push_then_predict(
    http: httpx.Client,
    url: str,
    model: str,
    theta: dict[str, np.ndarray],
    inputs: dict[str, np.ndarray],
    rounds: int = 20,
) -> tuple[str, float, float, float, str]:
    """PUT /models/{model}/variables (npz) and the next predict, together: the median of `rounds`
    (each push a new version; the answer checked to be the new version's). No floor: the goal is
    absolute (50 ms), against a reload of the model, which takes seconds."""
    headers = {"content-type": NPZ, "accept": NPZ}
    seconds = []
    for k in range(rounds):
        body = _npz(**{f"variables/{n}": v * (1 + 0.001 * k) for n, v in theta.items()})
        start = time.perf_counter()
        pushed = http.put(f"{url}/models/{model}/variables", content=body, headers={"content-type": NPZ})
        request = _npz(**{f"inputs/{n}": a for n, a in inputs.items()})
        answer = http.post(f"{url}/models/{model}/predict", content=request, headers=headers)
        seconds.append(time.perf_counter() - start)
        assert pushed.status_code == 200 and answer.status_code == 200, (pushed.text, answer.text[:300])
        assert int(np.load(io.BytesIO(answer.content))["version"]) == pushed.json()["version"]
    ms = statistics.median(seconds) * 1e3
    mib = sum(v.nbytes for v in theta.values()) / 2**20
    return (
        f"PUT /models/{model}/variables ({mib:.2f} MiB) then predict B={len(next(iter(inputs.values())))}",
        ms,
        float("nan"),
        ms / 50,
        "≤ 50 ms",
    )


def engine_vs_jax(repo: Path, rounds: int) -> tuple[str, float, float, float, str]:
    import jax
    import jax.numpy as jnp

    import app  # noqa: F401  (TensorFlow's environment)
    from app import calls
    from app.engine.derivatives import Engine

    engine = Engine(xla=False, model_repository=str(repo))
    params = {k: jnp.asarray(v, jnp.float32) for k, v in variables(repo / "mlp" / "1").items()}

    def f(x: jax.Array) -> jax.Array:
        for i in range(3):
            x = x @ params[f"dense/w{i}"] + params[f"dense/b{i}"]
            x = jnp.tanh(x) if i < 2 else x
        return x

    jac = jax.jit(jax.vmap(jax.jacrev(f)))
    x = np.random.default_rng(1).normal(size=(256, 64)).astype(np.float32)
    call = calls.Call(calls.JACOBIAN, ("x",), ("y",))
    np.testing.assert_allclose(
        engine.model_calls.run("mlp", call, (x,)).arrays["jacobian|y|x"], jac(x), rtol=1e-4, atol=1e-5
    )

    def mine() -> float:
        start = time.perf_counter()
        engine.model_calls.run("mlp", call, (x,))
        return time.perf_counter() - start

    def theirs() -> float:
        start = time.perf_counter()
        jac(x).block_until_ready()
        return time.perf_counter() - start

    for _ in range(5):
        mine(), theirs()
    m, t, ratio = alternate(mine, theirs, rounds)
    return ("engine mlp Jacobian B=256 vs jax.jit(vmap(jacrev))", m * 1e3, t * 1e3, ratio, "≤ 1.5")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    from examples import build_models

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        build_models.build(repo)
        rows, memory_rows, nuts_lines = served(repo, args.rounds)
        rows.append(engine_vs_jax(repo, args.rounds))
    lines = ["| goal | service ms | floor ms | ratio | goal ratio |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {m:.2f} | {t:.2f} | {r:.2f} | {g} |" for n, m, t, r, g in rows]
    lines += ["", "| memory: model, operation | estimate MiB | measured peak over idle MiB | measured ≤ estimate |"]
    lines += ["|---|---|---|---|"]
    lines += [f"| {n} | {e / 2**20:.1f} | {m / 2**20:.1f} | {'yes' if m <= e else 'NO'} |" for n, e, m in memory_rows]
    lines += ["", *nuts_lines]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


MEMORY_ROWS = {"mlp": {"hessian": 32, "hvp": 32}}  # rows per request; 256 otherwise


MEMORY_MODELS = ("actions", "mlp", "pair", "policy_mlp", "wide")


def memory(url: str, root_pid: int, models: tuple[str, ...] = MEMORY_MODELS) -> list[tuple[str, int, int]]:
    """For every example model and operation, after its first use (which traces it, measures its
    factor and runs alone on the whole budget): the claim (app.service.budget.estimate, from the
    card's measured factor) and the service's measured peak over idle (bench.memory: every
    process's resident memory and the shared-memory folder, sampled while it runs)."""
    from jacobian_client import Client

    from app import calls
    from app.catalog import card_from_dict
    from app.service import budget
    from app.service.problem import problem
    from bench.memory import PeakSampler, service_bytes

    rows = []
    rng = np.random.default_rng(3)
    with Client(url, timeout=300, retries=0) as client:
        for name in models:
            card = card_from_dict(client.model(name).card())
            for op in calls.OPERATIONS:
                call = calls.example_call(card, op)
                B = MEMORY_ROWS.get(name, {}).get(op, 256)
                inputs = {
                    t.name: rng.normal(size=(B, *t.shape[1:])).astype(t.dtype)
                    if t.floating
                    else np.zeros((B, *t.shape[1:]), t.dtype)
                    for t in card.inputs
                }
                tensors = {t.name: t for t in card.inputs + card.outputs}
                products = {
                    n: rng.normal(size=(2, B, *tensors[n].shape[1:])).astype(tensors[n].dtype)
                    for n in call.product_names()
                }
                group = "cotangents" if op == calls.VJP else "tangents"
                extra = {group: products} if products else {}
                model = client.model(name)
                _run(model, op, call, inputs, products)  # its first use: traced, calibrated, alone
                card = _measured(client, name, op)
                p = problem(card, op, inputs, list(call.wrt) or None, list(call.of) or None, **extra)
                estimate = budget.estimate(p, npz=True)
                time.sleep(0.3)
                idle = service_bytes(root_pid)
                with PeakSampler(root_pid) as sampler:
                    _run(model, op, call, inputs, products)
                rows.append((f"{name} {op} B={B}", estimate, sampler.peak - idle))
    return rows


def _run(model: Any, op: str, call: Any, inputs: dict[str, np.ndarray], products: dict[str, np.ndarray]) -> None:
    from app import calls

    if op == calls.PREDICT:
        model.predict(inputs)
    elif op == calls.VJP:
        model.vjp(inputs, products, wrt=call.wrt)
    elif op == calls.JVP:
        model.jvp(inputs, products, of=call.of)
    elif op == calls.HVP:
        model.hvp(inputs, products, wrt=call.wrt, of=call.of)
    else:
        getattr(model, op)(inputs, wrt=call.wrt, of=call.of)


def _measured(client: Any, name: str, op: str) -> Any:
    """The card once the workers have seen the operation's measured factor (engine status is
    polled): a request's estimate is made from it from then on."""
    from app.catalog import card_from_dict

    deadline = time.monotonic() + 10
    while True:
        card = card_from_dict(client.model(name).card())
        if op in card.peak_factors or time.monotonic() > deadline:
            return card
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
