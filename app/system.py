"""Facts of the machine or container this process runs in: its cgroup's memory limit and CPU
quota, physical memory, and the default memory budget they give. Imports nothing of the app,
so the settings (app.config) can read it."""

from __future__ import annotations

import os
from pathlib import Path


def default_budget(cgroup_root: str = "/sys/fs/cgroup", meminfo: str = "/proc/meminfo") -> int:
    """Half of the container's memory limit when there is one, else a quarter of physical memory."""
    limit = cgroup_limit(cgroup_root)
    return limit // 2 if limit is not None else physical_memory(meminfo) // 4


def describe_default(cgroup_root: str = "/sys/fs/cgroup", meminfo: str = "/proc/meminfo") -> str:
    limit = cgroup_limit(cgroup_root)
    if limit is not None:
        return f"half of the container's memory limit of {limit:,} bytes"
    return f"a quarter of the {physical_memory(meminfo):,} bytes of physical memory (no container limit)"


def cgroup_limit(root: str = "/sys/fs/cgroup") -> int | None:
    """This process's cgroup memory limit (v2 `memory.max`, else v1 `memory.limit_in_bytes`); None
    when unlimited or not found."""
    candidates = [Path(root, own_cgroup().lstrip("/"), "memory.max"), Path(root, "memory.max")]
    candidates.append(Path(root, "memory", "memory.limit_in_bytes"))
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        value = int(text)
        return value if value < 1 << 60 else None  # v1 says "unlimited" with a huge number
    return None


def cgroup_cpus(root: str = "/sys/fs/cgroup") -> int | None:
    """This process's cgroup CPU quota in whole CPUs, rounded up (v2 `cpu.max`, else v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None when unlimited or not found."""
    for path in (Path(root, own_cgroup().lstrip("/"), "cpu.max"), Path(root, "cpu.max")):
        try:
            quota, period = path.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    try:
        quota_us = int(Path(root, "cpu", "cpu.cfs_quota_us").read_text())
        period_us = int(Path(root, "cpu", "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else max(1, -(-quota_us // period_us))


def own_cgroup() -> str:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return "/"


def physical_memory(meminfo: str = "/proc/meminfo") -> int:
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
