"""`python -m bench.zoo` (part of `make bench`): the zoo (examples/zoo.py), every model × operation
at B=1 and B=16, side by side in one run:

- the service (`/models/{name}/{operation}`, npz, one HTTP worker, one engine) against the floor
  a user writes in an afternoon (bench/model_floor.py: FastAPI + a `tf.function` per operation,
  TensorFlow's defaults), alternating requests; goal ≤ 1.3×;
- the floor's `tf.function` timed in its own process, without HTTP (reported);
- how far the service's answer is from the floor's (max |difference| / max |floor's|).

Operations: predict, jacobian (every output in every float input), vjp (one cotangent per
output, in the float inputs), pg (the same in all trainable variables, summed over the batch)
and jvp. `no_gradient` is left out: a tape cannot differentiate its signature at all.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.models import alternate, push_then_predict
from bench.servers import PROJECT, TENSORFLOW_DEFAULTS, server
from tests.support.servers import free_port

NPZ = "application/x-npz"
MODELS = [
    "bn_dropout", "embedding", "linalg", "density",
    "mobilenet_export", "mobilenet_saved", "resnet_export", "resnet_saved",
]  # fmt: skip
OPS = ["predict", "jacobian", "vjp", "pg", "jvp"]


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


class Case:
    """One model × operation × B: the service's request and the floor's, for the same arrays."""

    def __init__(self, card: dict[str, Any], op: str, B: int, rng: np.random.Generator) -> None:
        self.name, self.op, self.B = card["name"], op, B
        inputs = {t["name"]: t for t in card["inputs"]}
        floating = [n for n, t in inputs.items() if t["dtype"].startswith("float")]
        xs = {n: self._array(t, B, rng) for n, t in inputs.items()}
        outs = {t["name"]: t for t in card["outputs"] if t["dtype"].startswith("float")}
        us = {o: rng.normal(size=(B, *t["shape"][1:])).astype(t["dtype"]) for o, t in outs.items()}
        ts = {n: rng.normal(size=xs[n].shape).astype(xs[n].dtype) for n in floating}
        mine = {f"inputs/{n}": x for n, x in xs.items()}
        theirs = dict(xs)
        query: dict[str, Any] = {}
        if op in ("vjp", "pg"):
            mine |= {f"cotangents/{o}": u for o, u in us.items()}
            theirs |= {f"u/{o}": u for o, u in us.items()}
            query = {"wrt": floating} if op == "vjp" else {"wrt": "variables", "sum_batch": "true"}
        elif op == "jvp":
            mine |= {f"tangents/{n}": t for n, t in ts.items()}
            theirs |= {f"t/{n}": t for n, t in ts.items()}
            query = {"wrt": floating}
        self.path = f"/models/{self.name}/{'vjp' if op == 'pg' else op}"
        self.mine, self.theirs, self.query = _npz(mine), _npz(theirs), query

    @staticmethod
    def _array(t: dict[str, Any], B: int, rng: np.random.Generator) -> np.ndarray:
        shape = (B, *t["shape"][1:])
        if t["dtype"].startswith("float"):
            return rng.normal(size=shape).astype(t["dtype"])
        return rng.integers(0, 4, size=shape).astype(t["dtype"])


def _post(http: httpx.Client, url: str, body: bytes, **query: Any) -> tuple[float, dict[str, np.ndarray]]:
    start = time.perf_counter()
    r = http.post(url, content=body, params=query, headers={"content-type": NPZ, "accept": NPZ})
    elapsed = time.perf_counter() - start
    assert r.status_code == 200, r.text[:300]
    return elapsed, dict(np.load(io.BytesIO(r.content)))


def _difference(op: str, mine: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> float:
    """max |service − floor| / max |floor's| over the answer's arrays, matched by name (the
    variables' gradients by position: the floor names them v0, v1, … in the same order)."""
    derivative = [k for k in mine if k.split("/")[0] in ("jacobian", "vjp", "jvp")]
    if op == "predict":
        pairs = [(mine[f"outputs/{k}"], a) for k, a in theirs.items()]
    elif op == "pg":
        pairs = [(mine[k], theirs[f"v{i}"]) for i, k in enumerate(derivative)]
    else:
        pairs = [(mine[f"{'vjp' if op == 'vjp' else op}/{k}"], a) for k, a in theirs.items()]
    scale = max(float(np.max(np.abs(w))) for _, w in pairs) or 1.0
    return max(float(np.max(np.abs(g.ravel() - w.ravel()))) for g, w in pairs) / scale


def _timers(http: httpx.Client, c: Case, mine_url: str, floor_url: str) -> tuple[Callable[[], float], ...]:
    def mine() -> float:
        return _post(http, mine_url + c.path, c.mine, **c.query)[0]

    def theirs() -> float:
        return _post(http, f"{floor_url}/{c.name}/{c.op}", c.theirs)[0]

    return mine, theirs


def _push_largest(http: httpx.Client, url: str, cards: list[dict[str, Any]], rng: np.random.Generator) -> str:
    """A push of the largest model's weights (its own values, read back), then a predict."""
    card = max(cards, key=lambda c: sum(int(np.prod(v["shape"])) for v in c["variables"]))
    r = http.get(f"{url}/models/{card['name']}/variables", headers={"accept": NPZ})
    theta = {k.removeprefix("variables/"): a for k, a in np.load(io.BytesIO(r.content)).items() if "/" in k}
    inputs = {t["name"]: Case._array(t, 1, rng) for t in card["inputs"]}
    name, ms, _, _, goal = push_then_predict(http, url, card["name"], theta, inputs, rounds=5)
    return f"{name}: {ms:.0f} ms (median of 5; the goal, {goal}, is the benchmark MLP's: bench/models.md)"


pushes: list[str] = []


def measure(
    root: Path, models: list[str], rounds: int, sizes: list[int]
) -> list[tuple[str, str, int, float, float, float, float, float]]:
    p, f = free_port(), free_port()
    env = {"JACOBIAN_MODEL_REPOSITORY": str(root), "JACOBIAN_WORKERS": "1"}
    floor_cmd = [sys.executable, "-m", "uvicorn", "bench.model_floor:app", "--log-level", "warning", "--port", str(f)]
    rows = []
    rng = np.random.default_rng(0)
    with (
        server("service", PROJECT, p, env),
        server("floor", floor_cmd, f, TENSORFLOW_DEFAULTS | {"JACOBIAN_FLOOR_REPOSITORY": str(root)}),
        httpx.Client(timeout=600) as http,
    ):
        mine_url, floor_url = f"http://127.0.0.1:{p}", f"http://127.0.0.1:{f}"
        cards = {c["name"]: c for c in http.get(mine_url + "/models").json()["models"]}
        for name in [m for m in models if m in cards]:
            for op in OPS:
                if op == "pg" and not cards[name]["variables"]:
                    continue
                for B in sizes:
                    c = Case(cards[name], op, B, rng)
                    mine, theirs = _timers(http, c, mine_url, floor_url)
                    _, got = _post(http, mine_url + c.path, c.mine, **c.query)  # traced (and calibrated)
                    _, want = _post(http, f"{floor_url}/{name}/{op}", c.theirs)
                    m, t, ratio = alternate(mine, theirs, rounds)
                    inproc = http.post(f"{floor_url}/{name}/{op}/timed", content=c.theirs).json()["seconds"]
                    rows.append((name, op, B, m * 1e3, t * 1e3, inproc * 1e3, ratio, _difference(op, got, want)))
                    print(f"{name} {op} B={B}: {m * 1e3:.1f} vs {t * 1e3:.1f} ms, ratio {ratio:.2f}", flush=True)
        pushes.append(_push_largest(http, mine_url, [cards[m] for m in models if m in cards], rng))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="two small models, B=1, one round")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    from examples import zoo

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "zoo"
        zoo.build(root, images=not args.quick)
        models = ["bn_dropout", "density"] if args.quick else MODELS
        rows = measure(root, models, 1 if args.quick else args.rounds, [1] if args.quick else [1, 16])
    lines = [
        "| model | operation | B | service ms | floor ms | floor's tf.function in process ms | service / floor | "
        "max difference (relative) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {o} | {b} | {m:.2f} | {t:.2f} | {i:.2f} | {r:.2f} | {d:.1e} |" for n, o, b, m, t, i, r, d in rows
    ]
    over = [r for r in rows if r[6] > 1.3]
    lines += ["", f"{len(rows) - len(over)} of {len(rows)} within the goal (service / floor ≤ 1.3)."]
    lines += [f"\nWeights pushed, the largest model: {p}" for p in pushes]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
