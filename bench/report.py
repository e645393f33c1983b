"""The benchmark's report: each goal as a row (project against floor, the ratio, the target, met
or not), the machine it ran on, the table and the latency plot."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    goal: str
    project: str
    floor: str
    ratio: float
    target: str
    met: bool


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(rows: list[Row]) -> str:
    out = ["| goal | project | floor / reference | ratio | target | met |", "|---|---|---|---|---|---|"]
    out += [
        f"| {r.goal} | {r.project} | {r.floor} | {r.ratio:.2f} | {r.target} | {'yes' if r.met else '**no**'} |"
        for r in rows
    ]
    return "\n".join(out)


def plot(points: list[tuple[int, float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [p[0] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.loglog(sizes, [p[1] * 1e3 for p in points], "o-", label="project (TensorFlow autodiff)")
    ax.loglog(sizes, [p[2] * 1e3 for p in points], "s--", label="floor (closed-form NumPy)")
    ax.set_xlabel("output elements A·A·F (JSON response)")
    ax.set_ylabel("median latency, one client (ms)")
    ax.set_title("POST /jacobian latency against output size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
