"""How many CPUs this process may really use, so TensorFlow does not start more busy threads
than there are cores.

``os.cpu_count()`` counts the node's cores; a container limited by a CFS quota (a Kubernetes
CPU limit) or a process pinned to fewer cores may use fewer. Oversubscribed TensorFlow
workers lose more to contention than they gain from parallelism.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP = Path("/sys/fs/cgroup")


def quota_cpus(root: Path = _CGROUP) -> float | None:
    """CPUs allowed by the cgroup's CFS quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or
    None when there is no quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus(root: Path = _CGROUP) -> int:
    """Cores this process may use: its affinity mask, capped by a cgroup quota (rounded up)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = quota_cpus(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def share_of(cpus: int, sharers: int) -> int:
    """Each of ``sharers`` processes on one host gets an equal whole share, at least one."""
    return max(1, cpus // max(1, sharers))
