"""app/system.py: the default memory budget from the cgroup (or the machine) and the CPU quota."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import system
from app.config import Settings

GiB = 1 << 30


def _fake_system(tmp: Path, own: str, files: dict[str, str], mem_kib: int = 16 * 2**20) -> tuple[str, str]:
    root = tmp / "cgroup"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    meminfo = tmp / "meminfo"
    meminfo.write_text(f"MemTotal:       {mem_kib} kB\nMemFree:        1 kB\n")
    return str(root), str(meminfo)


@pytest.mark.parametrize(
    "files,want",
    [
        ({"memory.max": "8589934592\n"}, 4 * GiB),  # cgroup v2 limit: half of it
        ({"memory.max": "max\n"}, 4 * GiB),  # v2, no limit: a quarter of 16 GiB
        ({"memory/memory.limit_in_bytes": "2147483648\n"}, 1 * GiB),  # v1 limit
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 4 * GiB),  # v1 "unlimited"
        ({}, 4 * GiB),  # no cgroup files at all
    ],
)
def test_default_budget_is_half_the_container_limit_else_a_quarter_of_memory(tmp_path: Path, files, want) -> None:
    root, meminfo = _fake_system(tmp_path, "/", files)
    assert system.default_budget(root, meminfo) == want


@pytest.mark.parametrize(
    "files,want",
    [
        ({"cpu.max": "200000 100000\n"}, 2),  # cgroup v2: 2 CPUs
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs round up
        ({"cpu.max": "max 100000\n"}, None),  # no limit
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1 unlimited
        ({}, None),
    ],
)
def test_the_cgroup_cpu_quota_in_whole_cpus(tmp_path: Path, files: dict[str, str], want: int | None) -> None:
    root, _ = _fake_system(tmp_path, "/", files)
    assert system.cgroup_cpus(root) == want


def test_an_empty_budget_setting_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JACOBIAN_MEMORY_BUDGET_BYTES", "")
    assert Settings().memory_budget_bytes == system.default_budget()


def test_the_settings_default_reads_this_machine() -> None:
    limit = system.cgroup_limit()
    want = limit // 2 if limit is not None else system.physical_memory() // 4
    assert Settings().memory_budget_bytes == want
