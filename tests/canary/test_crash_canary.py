"""Crash canary: a grid of operations × dtypes × shapes × (graph, XLA) run through the engine in
child processes. A native fault (the oneDNN AVX-512 segfault, an XLA abort, an allocator failure)
kills the process it happens in; here it kills only a child, and becomes a failing test that names
the case, while the rest of the grid still runs. On a CPU without AVX-512 it guards every other
way the engine could crash; it also checks that oneDNN runs held to AVX2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app import lifeline
from app.config import Settings
from app.endpoints import ENDPOINTS
from app.engine.xla import MAX_OUTPUT_BYTES

ROOT = Path(__file__).parents[2]
TOL = {"float64": 1e-9, "float32": 1e-5}
K = 2  # products per state for vjp and jvp


def _shapes() -> dict[str, list[tuple[int, int, int]]]:
    """(A, F, B) per family of operations: the sizes where the segfault was seen, and the largest
    answers the default limits admit (JSON, npz, and the batcher's row bound)."""
    s = Settings()
    json_max, npz_max, rows = s.max_json_output_elements, s.max_output_elements, s.max_batch_rows
    seen = [(2, 4, 1), (8, 64, 1), (16, 128, 1), (32, 256, 1), (32, 512, 1), (64, 128, 1), (64, 256, 1)]
    seen += [(64, 512, 1), (128, 64, 1)]
    # J-shaped answers: B·A·A·F elements.
    limits = [(64, json_max // 64**2, 1), (128, json_max // 128**2, 1), (32, 256, json_max // (32 * 32 * 256))]
    limits += [
        (8, json_max // (8 * 8 * rows), rows),
        (256, npz_max // 256**2, 1),
        (64, 256, npz_max // (64 * 64 * 256)),
    ]
    # The Hessian: B·A³·F² elements.
    hessian = [(2, 4, 1), (6, 8, 3), (16, 32, 1), (8, 32, json_max // (8**3 * 32**2)), (16, 128, 1), (32, 32, 2)]
    return {"jacobian-like": seen + limits, "hessian": hessian}


def _compiled(op: str, dtype: str, A: int, F: int, B: int) -> bool:
    """Whether the service would ever compile this case with XLA: outputs over the cap stay on the
    graph path (tests/app/test_engine.py), so their XLA case would be the graph case run twice."""
    padded = 1 << (B - 1).bit_length()  # the XLA path's rows (app.engine.xla)
    e = ENDPOINTS["jacobian" if op.startswith("jacobian") else op]
    wrt = {"jacobian_xy": ("X", "Y"), "jacobian_y": ("Y",)}.get(op, ("X",))
    numbers = e.elements(wrt, padded, A, F, K) + padded * A  # and W
    return numbers * np.dtype(dtype).itemsize <= MAX_OUTPUT_BYTES


def _grid() -> list[dict[str, Any]]:
    shapes = _shapes()
    cases = []
    # The Jacobian in X and Y together is the same two per-row Jacobians as each alone (one Kernel):
    # each alone is the case.
    for op in ("jacobian", "jacobian_y", "hvp", "hessian", "vjp", "jvp"):
        for path in ("graph", "xla"):
            for dtype in ("float32", "float64"):
                for A, F, B in shapes["hessian" if op == "hessian" else "jacobian-like"]:
                    if path == "xla" and not _compiled(op, dtype, A, F, B):
                        continue
                    case_id = f"{op}-{path}-{dtype}-{A}x{F}" + (f"-B{B}" if B > 1 else "")
                    case = {"id": case_id, "op": op, "dtype": dtype, "A": A, "F": F, "B": B, "K": K, "path": path}
                    cases.append(case)
    return cases


GRID = _grid()


@dataclass
class Outcome:
    errors: dict[str, float] = field(default_factory=dict)
    crashes: dict[str, str] = field(default_factory=dict)  # case id -> how the child died, with its log
    onednn: list[bool] = field(default_factory=list)
    onednn_work: list[str] = field(default_factory=list)  # oneDNN primitives created or run
    onednn_isa: set[str] = field(default_factory=set)  # the instruction sets oneDNN said it would use


def _run_children(cases: list[dict[str, Any]], log_dir: Path, timeout_s: float) -> Outcome:
    """Run `cases` in a child; when it dies on one, record that case and go on in a new child."""
    outcome, todo, attempt = Outcome(), list(cases), 0
    # Hostile on purpose: the app must hold oneDNN to AVX2 itself; the verbose log shows if it did not.
    env = {
        **os.environ,
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "ONEDNN_MAX_CPU_ISA": "ALL",
        # Each primitive's creation names its ISA (`brg_matmul:avx2`); logging every execution too
        # (`1`) cost the grid 6 s here.
        "ONEDNN_VERBOSE": "profile_create,info",
        "PYTHONFAULTHANDLER": "1",
    }
    while todo:
        attempt += 1
        log = log_dir / f"canary-{attempt}.log"
        with log.open("w") as err:
            proc = subprocess.Popen(
                lifeline.command([sys.executable, "-m", "tests.canary.canary_child"]),
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            try:
                stdout, _ = proc.communicate(json.dumps(todo), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, _ = proc.communicate()
        current = None
        for line in stdout.splitlines():
            if line.startswith("start "):
                current = line.split(" ", 1)[1]
            elif line.startswith("onednn_verbose,"):
                _note_onednn(outcome, line)
            elif line.startswith("{"):
                msg = json.loads(line)
                if "onednn" in msg:
                    outcome.onednn.append(msg["onednn"])
                else:
                    outcome.errors[msg["id"]] = msg["error"]
                    current = None
        for line in log.read_text().splitlines():
            if line.startswith("onednn_verbose,"):
                _note_onednn(outcome, line)
        done = {c["id"] for c in todo if c["id"] in outcome.errors}
        if proc.returncode == 0 and len(done) == len(todo):
            break
        how = _how_it_died(proc.returncode)
        dead = current or next((c["id"] for c in todo if c["id"] not in done), "?")
        outcome.crashes[dead] = f"child {how} on {dead}; log {log}:\n" + log.read_text()[-3000:]
        todo = [c for c in todo if c["id"] not in done and c["id"] != dead]
    return outcome


def _note_onednn(outcome: Outcome, line: str) -> None:
    """`onednn_verbose,v1,primitive,create:cache_miss,cpu,matmul,…` is work; `…,info,cpu,isa:…` its ISA."""
    parts = line.split(",")
    if parts[2:4] == ["info", "cpu"] and parts[4].startswith("isa:"):
        outcome.onednn_isa.add(parts[4].removeprefix("isa:"))
    elif len(parts) > 5 and parts[2] in ("primitive", "graph") and parts[3] != "info":
        outcome.onednn_work.append(line)


def _how_it_died(returncode: int | None) -> str:
    if returncode is None:
        return "hung (killed after the timeout)"
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return _run_children(GRID, tmp_path_factory.mktemp("canary"), timeout_s=900)


@pytest.mark.parametrize("case", GRID, ids=[c["id"] for c in GRID])
def test_case_runs_without_crashing_and_matches_the_closed_form(outcome: Outcome, case: dict[str, Any]) -> None:
    assert case["id"] not in outcome.crashes, outcome.crashes[case["id"]]
    assert case["id"] in outcome.errors, "the child never reached this case"
    assert outcome.errors[case["id"]] <= TOL[case["dtype"]], outcome.errors[case["id"]]


def test_onednn_runs_only_below_avx512_even_when_the_environment_asks_for_it(outcome: Outcome) -> None:
    """TensorFlow's oneDNN kernels run (convolutional models need them: app/tensorflow_env.py), and
    every oneDNN kernel, XLA's `dnnl_sgemm` included, is held to AVX2, away from the AVX-512
    matmul that crashed."""
    assert outcome.onednn and all(outcome.onednn), "TensorFlow started with oneDNN off"
    assert outcome.onednn_work, "no oneDNN kernel ran"
    assert outcome.onednn_isa and outcome.onednn_isa <= {"Intel AVX2"}, outcome.onednn_isa
    avx512 = [ln for ln in outcome.onednn_work if "avx512" in ln or "avx10" in ln]
    assert not avx512, avx512[:5]


def test_the_canary_sees_a_native_crash(tmp_path: Path) -> None:
    """The harness itself: a case that kills its child is reported as that case, and the next
    case still runs in a new child."""
    crash = {"id": "segfault", "op": "crash", "dtype": "float32", "A": 1, "F": 1, "B": 1, "K": K, "path": "graph"}
    after = {**GRID[0], "id": "after"}
    result = _run_children([crash, after], tmp_path, timeout_s=300)
    assert "killed by SIGSEGV on segfault" in result.crashes["segfault"]
    assert set(result.crashes) == {"segfault"} and result.errors["after"] <= TOL[after["dtype"]]


def test_every_repository_model_runs_every_operation_in_a_child(tmp_path: Path) -> None:
    """The example repository's models and the zoo's small ones (examples/zoo.py; its image models
    run every operation in tests/zoo), every operation, at the benchmark's sizes (float32 MLP
    Jacobians at B=256, its policy gradient at B=4096): a native fault fails this test naming the
    case, instead of killing the suite."""
    from examples import build_models, zoo

    build_models.build(tmp_path / "repo")
    zoo.build(tmp_path / "repo", images=False)
    child = [sys.executable, str(ROOT / "tests" / "canary" / "canary_models_child.py"), str(tmp_path / "repo")]
    proc = subprocess.run(child, capture_output=True, text=True, timeout=900, cwd=ROOT, env={**os.environ})
    started = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("start")]
    finished = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ok")]
    assert proc.returncode == 0, f"the child {_how_it_died(proc.returncode)} in {started[-1:]}: {proc.stderr[-2000:]}"
    assert started == finished and len(finished) >= 10 * 5
    # Second derivatives once took the Jacobian of the whole vectorized Jacobian: the MLP's Hessian
    # at B=256 peaked over 21 GB and was killed for it. Each case must fit the memory budget.
    (peak,) = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("peak_rss")]
    budget = Settings().memory_budget_bytes
    assert peak <= budget, f"the child peaked at {peak / 2**30:.1f} GiB, over the {budget / 2**30:.1f} GiB budget"
