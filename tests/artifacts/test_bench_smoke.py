"""`make bench` is not part of the suite (timings are noisy), but its code must run: a tiny pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import run
from tests.support.servers import free_port


def test_bench_quick_pass_writes_table_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # XLA's compiles are the service's work, not the benchmark's code: the smoke pass goes without.
    monkeypatch.setenv("JACOBIAN_XLA", "0")
    assert run.main(["--quick", "--out", str(tmp_path), "--port", str(free_port())]) == 0
    table = (tmp_path / "results.md").read_text()
    assert "2×4 throughput, 8 connections" in table and "| ratio |" in table
    assert "engine 4×16 Jacobian vs NumPy closed form" in table
    assert "V2 binary vs native npz" in table and "through Client vs a bare httpx npz post" in table
    assert "| oneDNN on, ISA capped at AVX2, BFC allocator (served) | " in table and "2×4 float64" in table
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_model_benchmark_runs_and_prints_its_goals(tmp_path: Path) -> None:
    from bench import models

    assert models.main(["--rounds", "1", "--out", str(tmp_path / "models.md")]) == 0
    table = (tmp_path / "models.md").read_text()
    assert "mlp Jacobian, B=256" in table and "policy gradient" in table and "jax.jit(vmap(jacrev))" in table
    assert "| mlp hessian B=32 |" in table and "| wide vjp B=256 |" in table
    assert "at θ in the request" in table and "PUT /models/mlp/variables" in table and "run alone" in table
    assert "UM-Bridge Gradient of one example" in table
    assert (
        "| NUTS chain, wide, 10 draws" in table
        and "| served (UM-Bridge) |" in table
        and "| local (PyTensor) |" in table
    )


def test_the_client_wrappers_benchmark_runs_and_prints_its_goals(tmp_path: Path) -> None:
    from bench import client_wrappers

    assert client_wrappers.main(["--rounds", "1", "--out", str(tmp_path / "client_wrappers.md")]) == 0
    table = (tmp_path / "client_wrappers.md").read_text()
    assert "jit(jacrev) of the remote policy" in table and "vmap of a remote VJP over 64 cotangents" in table


def test_the_zoo_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    from bench import zoo

    assert zoo.main(["--quick", "--out", str(tmp_path / "zoo.md")]) == 0
    table = (tmp_path / "zoo.md").read_text()
    assert "| bn_dropout | jacobian | 1 |" in table and "| density | pg | 1 |" in table and "within the goal" in table
