"""The JAX wrapper's goals, side by side in one run against one service (`python -m bench.client_wrappers`):

- `jax.jit(jax.jacrev(policy))` of the remote built-in model at 64×512 float32: its requests, and
  its time against a bare client `/jacobian` call (goal: one request, ≤ 1.3×);
- `jax.vmap` of a remote VJP over 64 cotangents against 64 sequential client `/vjp` calls (goal:
  one request, ≥ 10× faster);
- the basis rule's one tie (`jacobian_client._remote`): the built-in model's Jacobian as one K=64
  `/vjp` of the basis against `/jacobian` (equal answers; the rule takes `/jacobian`, so > 1
  would bear it out).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jacobian_client.jax as jcj
import jax
import numpy as np
from jacobian_client import Client

from bench.models import alternate
from bench.servers import PROJECT, server
from tests.support.servers import free_port


def _seconds(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(run())
    return time.perf_counter() - start


def measure(rounds: int) -> list[str]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 512)).astype(np.float32)
    Y = rng.normal(size=512).astype(np.float32)
    U = rng.normal(size=(64, 64)).astype(np.float32)
    port = free_port()
    with server("service", PROJECT, port, {"JACOBIAN_WORKERS": "1"}), Client(f"http://127.0.0.1:{port}") as client:
        policy = jcj.policy(client)
        jacrev = jax.jit(jax.jacrev(policy))
        jax.block_until_ready(jacrev(X, Y))  # traced once
        before = policy.remote.requests
        jax.block_until_ready(jacrev(X, Y))
        jacrev_requests = policy.remote.requests - before
        a = alternate(lambda: _seconds(lambda: jacrev(X, Y)), lambda: _seconds(lambda: client.jacobian(X, Y)), rounds)

        _, pullback = jax.vjp(lambda X: policy(X, Y), X)
        batched = jax.jit(jax.vmap(pullback))
        jax.block_until_ready(batched(U))
        before = policy.remote.requests
        jax.block_until_ready(batched(U))
        vmap_requests = policy.remote.requests - before

        def sequential() -> None:
            for u in U:
                client.vjp(X, Y, u)

        b = alternate(lambda: _seconds(lambda: batched(U)), lambda: _seconds(sequential), max(3, rounds // 5))
        basis = np.eye(64, dtype=np.float32)
        c = alternate(
            lambda: _seconds(lambda: client.vjp(X, Y, basis)), lambda: _seconds(lambda: client.jacobian(X, Y)), rounds
        )
    return [
        "| goal | requests | service ms | floor ms | ratio | target |",
        "|---|---|---|---|---|---|",
        f"| jit(jacrev) of the remote policy, 64×512 float32, vs bare /jacobian | {jacrev_requests} | "
        f"{a[0] * 1e3:.1f} | {a[1] * 1e3:.1f} | {a[2]:.2f} | 1 request, ≤ 1.3 |",
        f"| vmap of a remote VJP over 64 cotangents vs 64 sequential /vjp | {vmap_requests} | "
        f"{b[0] * 1e3:.1f} | {b[1] * 1e3:.1f} | {1 / b[2]:.1f}× faster | 1 request, ≥ 10× |",
        f"| the basis as one K=64 /vjp vs /jacobian (the rule's tie) | 1 | "
        f"{c[0] * 1e3:.1f} | {c[1] * 1e3:.1f} | {c[2]:.2f} | (the rule: > 1) |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    text = "\n".join(measure(args.rounds)) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
